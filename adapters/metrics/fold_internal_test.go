package metrics

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func ptr[T any](v T) *T { return &v }

// TestFoldLeavesWhatCannotAdd: series that cannot be added up (histograms
// with different buckets, summaries) are served unfolded, not wrong.
func TestFoldLeavesWhatCannotAdd(t *testing.T) {
	hist := func(worker string, bounds ...float64) *dto.Metric {
		h := &dto.Histogram{SampleCount: ptr[uint64](1), SampleSum: ptr[float64](1)}
		for _, b := range bounds {
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr(b), CumulativeCount: ptr[uint64](1)})
		}
		return &dto.Metric{Label: []*dto.LabelPair{{Name: ptr(workerLabel), Value: ptr(worker)}}, Histogram: h}
	}
	summary := func(worker string) *dto.Metric {
		return &dto.Metric{Label: []*dto.LabelPair{{Name: ptr(workerLabel), Value: ptr(worker)}},
			Summary: &dto.Summary{SampleCount: ptr[uint64](1), SampleSum: ptr[float64](1)}}
	}
	tests := []struct {
		name    string
		metrics []*dto.Metric
	}{
		{"different buckets", []*dto.Metric{hist("h_0", 1, 2), hist("h_1", 1, 5)}},
		{"different bucket counts", []*dto.Metric{hist("h_0", 1, 2), hist("h_1", 1)}},
		{"summaries", []*dto.Metric{summary("h_0"), summary("h_1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mf := &dto.MetricFamily{Name: ptr("referrer_sync_watermill_x"), Metric: tt.metrics}
			foldFamily(mf)
			if len(mf.GetMetric()) != 2 {
				t.Fatalf("got %d series, want the 2 unfolded", len(mf.GetMetric()))
			}
			for i, m := range mf.GetMetric() {
				if got, want := m.GetLabel()[0].GetValue(), []string{"h_0", "h_1"}[i]; got != want {
					t.Errorf("series %d: handler_name %q, want %q", i, got, want)
				}
			}
		})
	}
}
