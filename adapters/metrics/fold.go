package metrics

import (
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// workerLabel is the label Watermill's router metrics name the handler by.
const workerLabel = "handler_name"

// workerSuffix is the per-worker suffix of a handler name: the consumer adds
// one Watermill handler per worker (referrer_joined_0, referrer_joined_1,
// ...), all doing the same work.
var workerSuffix = regexp.MustCompile(`_[0-9]+$`)

// foldWorkers merges the series of Watermill's router metrics
// (referrer_sync_watermill_*) that differ only in the worker suffix of
// handler_name, so nats.workers does not multiply them: the merged series
// keeps handler_name without the suffix. Counters, gauges and histograms
// with the same buckets add up; any other family is left as it is.
func foldWorkers(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), namespace+"_watermill_") {
				foldFamily(mf)
			}
		}
		return mfs, err
	})
}

// foldFamily merges mf's series in place. Gather builds fresh families on
// every call, so they are the caller's to change. A family whose series
// cannot all be added up is left as it is rather than folded wrongly.
func foldFamily(mf *dto.MetricFamily) {
	var keys []string
	groups := map[string][]*dto.Metric{}
	for _, m := range mf.GetMetric() {
		var key strings.Builder
		for _, lp := range m.GetLabel() {
			v := lp.GetValue()
			if lp.GetName() == workerLabel {
				v = workerSuffix.ReplaceAllString(v, "")
			}
			key.WriteString(lp.GetName() + "\xff" + v + "\xff")
		}
		k := key.String()
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], m)
	}
	for _, g := range groups {
		for _, m := range g[1:] {
			if !addable(g[0], m) {
				return
			}
		}
	}
	out := make([]*dto.Metric, 0, len(keys))
	for _, k := range keys {
		g := groups[k]
		for _, m := range g[1:] {
			add(g[0], m)
		}
		for _, lp := range g[0].GetLabel() {
			if lp.GetName() == workerLabel {
				v := workerSuffix.ReplaceAllString(lp.GetValue(), "")
				lp.Value = &v
			}
		}
		out = append(out, g[0])
	}
	mf.Metric = out
}

// addable reports whether m's value can be added to into's: the same kind,
// and for histograms the same classic buckets.
func addable(into, m *dto.Metric) bool {
	switch {
	case into.Counter != nil && m.Counter != nil,
		into.Gauge != nil && m.Gauge != nil,
		into.Untyped != nil && m.Untyped != nil:
		return true
	case into.Histogram != nil && m.Histogram != nil:
		a, b := into.Histogram, m.Histogram
		if len(a.GetPositiveSpan())+len(b.GetPositiveSpan())+len(a.GetNegativeSpan())+len(b.GetNegativeSpan()) > 0 {
			return false // native histograms do not add bucket by bucket
		}
		return slices.EqualFunc(a.GetBucket(), b.GetBucket(), func(x, y *dto.Bucket) bool { return x.GetUpperBound() == y.GetUpperBound() })
	}
	return false
}

// add adds m's value into into's; addable(into, m) must hold.
func add(into, m *dto.Metric) {
	switch {
	case into.Counter != nil:
		v := into.Counter.GetValue() + m.Counter.GetValue()
		into.Counter.Value = &v
	case into.Gauge != nil:
		v := into.Gauge.GetValue() + m.Gauge.GetValue()
		into.Gauge.Value = &v
	case into.Untyped != nil:
		v := into.Untyped.GetValue() + m.Untyped.GetValue()
		into.Untyped.Value = &v
	case into.Histogram != nil:
		a, b := into.Histogram, m.Histogram
		count, sum := a.GetSampleCount()+b.GetSampleCount(), a.GetSampleSum()+b.GetSampleSum()
		a.SampleCount, a.SampleSum = &count, &sum
		for i, bk := range a.GetBucket() {
			c := bk.GetCumulativeCount() + b.GetBucket()[i].GetCumulativeCount()
			bk.CumulativeCount = &c
		}
	}
}
