package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/referrer-sync/referrer-sync/adapters/metrics"
)

// TestWatermillWorkersFolded: Watermill's router metrics, one handler per
// worker, are served as one series per handler; the values add up. Other
// families keep their labels.
func TestWatermillWorkersFolded(t *testing.T) {
	m := metrics.New("test")
	exec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "referrer_sync_watermill_handler_execution_time_seconds", Help: "h", Buckets: []float64{0.1, 1},
	}, []string{"handler_name", "success"})
	recv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "referrer_sync_watermill_subscriber_messages_received_total", Help: "c",
	}, []string{"acked", "handler_name", "subscriber_name"})
	other := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "other_total", Help: "o"}, []string{"handler_name"})
	m.Registry.MustRegister(exec, recv, other)
	for i, w := range []string{"referrer_joined_0", "referrer_joined_1", "referrer_joined_12"} {
		exec.WithLabelValues(w, "true").Observe(0.05)
		exec.WithLabelValues(w, "true").Observe(0.5 * float64(i))
		exec.WithLabelValues(w, "false").Observe(2)
		recv.WithLabelValues("acked", w, "puller").Add(float64(i + 1))
		other.WithLabelValues(w).Inc()
	}
	srv := httptest.NewServer(m.Mux(nil))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }() // read to the end below; a close error tells nothing
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	render := func(name string) []string {
		var out []string
		for _, s := range mfs[name].GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := ""
			switch {
			case s.Histogram != nil:
				var bs []string
				for _, b := range s.GetHistogram().GetBucket() {
					bs = append(bs, model.SampleValue(b.GetCumulativeCount()).String())
				}
				v = "count=" + model.SampleValue(s.GetHistogram().GetSampleCount()).String() +
					" sum=" + strconv.FormatFloat(s.GetHistogram().GetSampleSum(), 'g', 6, 64) + " buckets=" + strings.Join(bs, ",")
			case s.Counter != nil:
				v = model.SampleValue(s.GetCounter().GetValue()).String()
			}
			out = append(out, strings.Join(ls, ",")+" "+v)
		}
		slices.Sort(out)
		return out
	}
	tests := []struct {
		family string
		want   []string
	}{
		{"referrer_sync_watermill_handler_execution_time_seconds", []string{
			"handler_name=referrer_joined,success=false count=3 sum=6 buckets=0,0,3",
			"handler_name=referrer_joined,success=true count=6 sum=1.65 buckets=4,6,6",
		}},
		{"referrer_sync_watermill_subscriber_messages_received_total", []string{
			"acked=acked,handler_name=referrer_joined,subscriber_name=puller 6",
		}},
		{"other_total", []string{"handler_name=referrer_joined_0 1", "handler_name=referrer_joined_1 1", "handler_name=referrer_joined_12 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			if got := render(tt.family); !slices.Equal(got, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
