package metrics_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"

	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/domain"
)

// exercised returns Metrics with every series of its own collectors
// present, so the linter sees each family with labels.
func exercised(opts ...metrics.Option) *metrics.Metrics {
	m := metrics.New("test", opts...)
	m.Outcome("camp_1", domain.ActionCreateLead, domain.OutcomeCreated, "")
	m.Outcome("camp_1", domain.ActionCreateLead, domain.OutcomeDeadLettered, "crm_rejected")
	m.Outcome("camp_1", domain.ActionCreateLead, domain.OutcomeDuplicate, "")
	m.Retry("camp_1", "transient")
	m.Processed(1500 * time.Millisecond)
	m.EventAge(-time.Second)
	m.CRMRequest("main")("search", 200, 20*time.Millisecond)
	m.CRMRequest("main")("create", 0, time.Second)
	m.CRMRateLimit("main")(1000, 998, time.Now())
	m.ConsumerState(3, 2)
	m.Reload(true)
	m.ConfigLoaded("0123456789abcdef0123")
	m.DryRun("camp_1", domain.ActionCreateUser, "would_create", "")
	m.Gauges(func() float64 { return 2 }, func() bool { return true })
	return m
}

// TestPromlint lints everything the registry exposes, the Go and process
// collectors included.
func TestPromlint(t *testing.T) {
	m := exercised()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if len(mfs) < 20 {
		t.Fatalf("gathered %d families; the lint would check little", len(mfs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestCounters(t *testing.T) {
	m := exercised()
	tests := []struct {
		name, want string
		names      []string
	}{
		{"outcomes", `
# HELP referrer_sync_events_total Messages by final outcome. Every message ends in exactly one outcome; reason is set for dead letters.
# TYPE referrer_sync_events_total counter
referrer_sync_events_total{action="create_lead",campaign="camp_1",outcome="created",reason=""} 1
referrer_sync_events_total{action="create_lead",campaign="camp_1",outcome="dead_lettered",reason="crm_rejected"} 1
referrer_sync_events_total{action="create_lead",campaign="camp_1",outcome="duplicate",reason=""} 1
`, []string{"referrer_sync_events_total"}},
		{"dead letters and duplicates follow outcomes", `
# HELP referrer_sync_dead_letters_total Messages stored on the dead-letter subject, by reason.
# TYPE referrer_sync_dead_letters_total counter
referrer_sync_dead_letters_total{reason="crm_rejected"} 1
# HELP referrer_sync_duplicates_absorbed_total Deliveries of events the ledger had already recorded as applied; acknowledged without a CRM call.
# TYPE referrer_sync_duplicates_absorbed_total counter
referrer_sync_duplicates_absorbed_total 1
`, []string{"referrer_sync_dead_letters_total", "referrer_sync_duplicates_absorbed_total"}},
		{"crm requests, no response is error", `
# HELP referrer_sync_crm_requests_total HTTP requests to CRM APIs by connection, operation and status ("error" when no response arrived).
# TYPE referrer_sync_crm_requests_total counter
referrer_sync_crm_requests_total{connection="main",operation="create",status="error"} 1
referrer_sync_crm_requests_total{connection="main",operation="search",status="200"} 1
`, []string{"referrer_sync_crm_requests_total"}},
		{"reloads, generation and file hash", `
# HELP referrer_sync_config_generation Generation of the campaign settings in use: 1 at start, +1 per successful reload.
# TYPE referrer_sync_config_generation gauge
referrer_sync_config_generation 2
# HELP referrer_sync_config_info Always 1; sha256 is the first 12 hex digits of the SHA-256 of the configuration file last loaded, so replicas running different files can be told apart.
# TYPE referrer_sync_config_info gauge
referrer_sync_config_info{sha256="0123456789ab"} 1
# HELP referrer_sync_config_reloads_total Configuration reload attempts by result (success, failure).
# TYPE referrer_sync_config_reloads_total counter
referrer_sync_config_reloads_total{result="failure"} 0
referrer_sync_config_reloads_total{result="success"} 1
`, []string{"referrer_sync_config_generation", "referrer_sync_config_info", "referrer_sync_config_reloads_total"}},
		{"gauges", `
# HELP referrer_sync_consumer_ack_pending_messages Messages delivered to the durable consumer and not yet acknowledged, across all replicas (polled from consumer info).
# TYPE referrer_sync_consumer_ack_pending_messages gauge
referrer_sync_consumer_ack_pending_messages 2
# HELP referrer_sync_consumer_pending_messages Messages in the stream not yet delivered to the durable consumer (polled from consumer info).
# TYPE referrer_sync_consumer_pending_messages gauge
referrer_sync_consumer_pending_messages 3
# HELP referrer_sync_crm_rate_limit_remaining Requests left in the CRM's current rate-limit window, from its last response.
# TYPE referrer_sync_crm_rate_limit_remaining gauge
referrer_sync_crm_rate_limit_remaining{connection="main"} 998
# HELP referrer_sync_in_flight_messages Messages being processed by this process now.
# TYPE referrer_sync_in_flight_messages gauge
referrer_sync_in_flight_messages 2
# HELP referrer_sync_ready 1 when the process is ready (connected, bound, tokens verified, not draining), else 0.
# TYPE referrer_sync_ready gauge
referrer_sync_ready 1
`, []string{"referrer_sync_consumer_ack_pending_messages", "referrer_sync_consumer_pending_messages", "referrer_sync_crm_rate_limit_remaining", "referrer_sync_in_flight_messages", "referrer_sync_ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := exposition(t, m.Registry, tt.names...), strings.TrimPrefix(tt.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// exposition renders the named families in the text format, in name order.
func exposition(t *testing.T, g prometheus.Gatherer, names ...string) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if slices.Contains(names, mf.GetName()) {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String()
}

func TestConfigLoadedKeepsOneSeries(t *testing.T) {
	m := metrics.New("test")
	m.ConfigLoaded("aaaaaaaaaaaaaaaa")
	m.ConfigLoaded("bbbbbbbbbbbbbbbb")
	got := exposition(t, m.Registry, "referrer_sync_config_info")
	if strings.Count(got, "referrer_sync_config_info{") != 1 || !strings.Contains(got, `sha256="bbbbbbbbbbbb"`) {
		t.Errorf("got:\n%s\nwant one series, for the file in use (bbbbbbbbbbbb)", got)
	}
}

func TestCampaignLabels(t *testing.T) {
	tests := []struct {
		name string
		opts []metrics.Option
		want string
	}{
		{"default: campaign ids", nil, "camp_1"},
		{"off: one label for all", []metrics.Option{metrics.CampaignLabels(false)}, metrics.LabelAll},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := exercised(tt.opts...)
			mfs, err := m.Registry.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, mf := range mfs {
				for _, s := range mf.GetMetric() {
					for _, lp := range s.GetLabel() {
						if lp.GetName() != "campaign" {
							continue
						}
						seen++
						if lp.GetValue() != tt.want {
							t.Errorf("%s: got campaign=%q, want %q", mf.GetName(), lp.GetValue(), tt.want)
						}
					}
				}
			}
			if seen < 5 { // 3 outcomes, 1 retry, 1 dry run
				t.Errorf("got %d series with a campaign label, want at least 5", seen)
			}
		})
	}
}

func TestHealthEndpoints(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		ready      error
		wantStatus int
		wantBody   string
	}{
		{"alive", "/healthz", errors.New("draining"), http.StatusOK, "ok"},
		{"ready", "/readyz", nil, http.StatusOK, "ready"},
		{"not ready names why", "/readyz", errors.Join(errors.New("draining"), errors.New("nats not connected")), http.StatusServiceUnavailable, "not ready: draining\nnats not connected"},
		{"metrics", "/metrics", errors.New("draining"), http.StatusOK, "referrer_sync_build_info{version=\"test\"} 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := metrics.New("test")
			srv := httptest.NewServer(m.Mux(func() error { return tt.ready }))
			defer srv.Close()
			res, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close() // read to the end; a close error tells nothing
			if res.StatusCode != tt.wantStatus || !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", res.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
		})
	}
}
