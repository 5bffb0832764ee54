package metrics_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// series returns "name{l1=v1,...} value" for every series of the named
// families, sorted.
func series(t *testing.T, m *metrics.Metrics, names ...string) []string {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out = append(out, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(ls, ","), s.GetCounter().GetValue()))
		}
	}
	slices.Sort(out)
	return out
}

func catalog() *domain.Catalog {
	return &domain.Catalog{Campaigns: map[string]domain.Campaign{
		"camp_lead": {Action: domain.ActionCreateLead},
		"camp_off":  {Action: domain.ActionNothing},
	}}
}

// TestInitCreatesEverySeriesAtZero: before any event, every reason, cause
// and outcome the configuration can produce is exposed at 0, so the first
// increment is an increase Prometheus sees.
func TestInitCreatesEverySeriesAtZero(t *testing.T) {
	m := metrics.New("test")
	m.Init(metrics.Known{Catalog: catalog()})
	got := series(t, m, "referrer_sync_events_total", "referrer_sync_retries_total", "referrer_sync_dead_letters_total")
	for _, s := range got {
		if !strings.HasSuffix(s, "} 0") {
			t.Errorf("%s: want 0", s)
		}
	}
	reasons, causes := metrics.DeadLetterReasons(), metrics.RetryCauses()
	invalid := []string{domain.ReasonTooLarge, domain.ReasonMalformed, domain.ReasonWrongType, domain.ReasonMissingID,
		domain.ReasonMissingCampaign, domain.ReasonMissingEmail, domain.ReasonInvalidEmail}
	failed := []string{domain.ReasonMapping, app.ReasonCRMRejected, app.ReasonUnauthorized, app.ReasonAttemptsExhausted, app.ReasonDeliveriesExhausted}
	var want []string
	for _, r := range reasons {
		want = append(want, "referrer_sync_dead_letters_total{reason="+r+"} 0")
	}
	// Rejected by the decoder: no action, under any label.
	for _, label := range []string{app.LabelUnknown, app.LabelUnconfigured, "camp_lead", "camp_off"} {
		for _, r := range invalid {
			want = append(want, "referrer_sync_events_total{action=,campaign="+label+",outcome=dead_lettered,reason="+r+"} 0")
		}
	}
	for _, r := range failed {
		want = append(want, "referrer_sync_events_total{action=create_lead,campaign=camp_lead,outcome=dead_lettered,reason="+r+"} 0")
	}
	for _, o := range []string{"created", "updated", "skipped", "duplicate"} {
		want = append(want, "referrer_sync_events_total{action=create_lead,campaign=camp_lead,outcome="+o+",reason=} 0")
	}
	want = append(want,
		"referrer_sync_events_total{action=nothing,campaign=camp_off,outcome=nothing,reason=} 0",
		"referrer_sync_events_total{action=,campaign="+app.LabelUnconfigured+",outcome=unconfigured,reason=} 0",
		"referrer_sync_retries_total{campaign="+app.LabelUnknown+",cause=dead_letter_failed} 0")
	for _, c := range causes {
		want = append(want,
			"referrer_sync_retries_total{campaign=camp_lead,cause="+c+"} 0",
			"referrer_sync_retries_total{campaign=camp_off,cause="+c+"} 0")
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("got %d series:\n%s\nwant %d:\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
	if all := append(slices.Clone(invalid), failed...); !slices.Equal(slices.Sorted(slices.Values(all)), slices.Sorted(slices.Values(reasons))) {
		t.Errorf("DeadLetterReasons %v, want the decoder's %v and the later failures' %v", reasons, invalid, failed)
	}
}

// TestInitKeepsCounts: Init again after a reload adds the new campaigns'
// series and leaves counted values alone.
func TestInitKeepsCounts(t *testing.T) {
	m := metrics.New("test")
	m.Init(metrics.Known{Catalog: catalog()})
	m.Outcome("camp_lead", domain.ActionCreateLead, domain.OutcomeDeadLettered, app.ReasonCRMRejected)
	m.Retry("camp_lead", "transient")
	c := catalog()
	c.Campaigns["camp_new"] = domain.Campaign{Action: domain.ActionCreateUser}
	c.Default = &domain.Campaign{Action: domain.ActionCreateUser}
	m.Init(metrics.Known{Catalog: c, Reasons: []string{app.ReasonCRMRejected}, Causes: []string{"transient"}})
	got := series(t, m, "referrer_sync_events_total", "referrer_sync_retries_total", "referrer_sync_dead_letters_total")
	for _, want := range []string{
		"referrer_sync_dead_letters_total{reason=crm_rejected} 1",
		"referrer_sync_events_total{action=create_lead,campaign=camp_lead,outcome=dead_lettered,reason=crm_rejected} 1",
		"referrer_sync_retries_total{campaign=camp_lead,cause=transient} 1",
		"referrer_sync_events_total{action=create_user,campaign=camp_new,outcome=created,reason=} 0",
		"referrer_sync_events_total{action=create_user,campaign=camp_new,outcome=dead_lettered,reason=crm_rejected} 0",
		"referrer_sync_retries_total{campaign=camp_new,cause=transient} 0",
		"referrer_sync_events_total{action=create_user,campaign=" + app.LabelUnconfigured + ",outcome=created,reason=} 0",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %s", want)
		}
	}
	if slices.Contains(got, "referrer_sync_retries_total{campaign=camp_new,cause=ledger} 0") {
		t.Error("Known.Causes was not used")
	}
}

func TestInitWithoutCampaignLabels(t *testing.T) {
	m := metrics.New("test", metrics.CampaignLabels(false))
	m.Init(metrics.Known{Catalog: catalog()})
	for _, s := range series(t, m, "referrer_sync_events_total", "referrer_sync_retries_total") {
		if !strings.Contains(s, "campaign="+metrics.LabelAll+",") && !strings.Contains(s, "campaign="+metrics.LabelAll+"}") {
			t.Errorf("%s: want campaign=%s", s, metrics.LabelAll)
		}
	}
}

// histogram returns the sum and count of the named family's one
// histogram, and the smallest bucket bound holding every observation
// (+Inf when only the +Inf bucket does).
func histogram(t *testing.T, m *metrics.Metrics, name string) (sum float64, count uint64, le float64) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		le = math.Inf(1)
		for _, b := range h.GetBucket() {
			if b.GetCumulativeCount() == h.GetSampleCount() {
				le = b.GetUpperBound()
				break
			}
		}
		return h.GetSampleSum(), h.GetSampleCount(), le
	}
	t.Fatalf("no %s", name)
	return 0, 0, 0
}

func counter(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	s := series(t, m, name)
	if len(s) != 1 {
		t.Fatalf("%s: %v, want one series", name, s)
	}
	var v float64
	if _, err := fmt.Sscanf(s[0][strings.LastIndex(s[0], " ")+1:], "%g", &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestEventAge: ages from seconds to weeks land in finite buckets; an event
// from the future is observed as 0 and counted, so the sum never decreases.
func TestEventAge(t *testing.T) {
	tests := []struct {
		name      string
		age       time.Duration
		wantSum   float64
		wantAhead float64
		wantLE    float64 // the smallest bucket holding the observation
	}{
		{"live", 3 * time.Second, 3, 0, 5},
		{"replayed a day later", 25 * time.Hour, 25 * 3600, 0, 3 * 86400},
		{"backfill of last week", 7 * 24 * time.Hour, 7 * 86400, 0, 7 * 86400},
		{"from the future", -4 * 365 * 24 * time.Hour, 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := metrics.New("test")
			m.EventAge(tt.age)
			sum, count, le := histogram(t, m, "referrer_sync_event_age_seconds")
			if sum != tt.wantSum || count != 1 {
				t.Errorf("sum %g count %d, want %g and 1", sum, count, tt.wantSum)
			}
			if le != tt.wantLE {
				t.Errorf("lands in le=%g, want le=%g", le, tt.wantLE)
			}
			if got := counter(t, m, "referrer_sync_event_time_ahead_total"); got != tt.wantAhead {
				t.Errorf("event_time_ahead_total %g, want %g", got, tt.wantAhead)
			}
			if _, n, _ := histogram(t, m, "referrer_sync_event_processing_seconds"); n != 0 {
				t.Errorf("processing histogram observed %d, want 0: age is its own measurement", n)
			}
		})
	}
}

func TestProcessedNeverNegative(t *testing.T) {
	m := metrics.New("test")
	m.Processed(250 * time.Millisecond)
	m.Processed(-time.Hour)
	if sum, count, _ := histogram(t, m, "referrer_sync_event_processing_seconds"); sum != 0.25 || count != 2 {
		t.Errorf("sum %g count %d, want 0.25 and 2", sum, count)
	}
}

// TestCRMUnauthorized: the refused-token counter exists at 0 for every
// connection with a hook, and counts 401 and 403 only.
func TestCRMUnauthorized(t *testing.T) {
	m := metrics.New("test")
	observe := m.CRMRequest("main")
	m.CRMRequest("other")
	want0 := []string{
		"referrer_sync_crm_unauthorized_total{connection=main} 0",
		"referrer_sync_crm_unauthorized_total{connection=other} 0",
	}
	if got := series(t, m, "referrer_sync_crm_unauthorized_total"); !slices.Equal(got, want0) {
		t.Errorf("before any request: got %v, want %v", got, want0)
	}
	for _, status := range []int{200, 401, 403, 404, 429, 500, 0} {
		observe("get", status, time.Millisecond)
	}
	want := []string{
		"referrer_sync_crm_unauthorized_total{connection=main} 2",
		"referrer_sync_crm_unauthorized_total{connection=other} 0",
	}
	if got := series(t, m, "referrer_sync_crm_unauthorized_total"); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
