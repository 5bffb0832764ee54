package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

// clientOperation maps the emulator's operation names (the OpenAPI
// operationIds) to the adapter's, which label the CRM metrics.
var clientOperation = map[string]string{
	emulator.OpIdentifyAdmin:           intercom.OpMe,
	emulator.OpListDataAttributes:      intercom.OpListAttributes,
	emulator.OpCreateDataAttribute:     intercom.OpCreateAttribute,
	emulator.OpSearchContacts:          intercom.OpSearch,
	emulator.OpCreateContact:           intercom.OpCreate,
	emulator.OpUpdateContact:           intercom.OpUpdate,
	emulator.OpShowContactByExternalID: intercom.OpFindByExternalID,
	emulator.OpShowContact:             intercom.OpGet,
}

// TestMetricsAfterKnownWorkload scrapes a running instance after a known
// workload and checks every catalogued metric against the work done and
// against the CRM's own request log.
func TestMetricsAfterKnownWorkload(t *testing.T) {
	const rateLimit = 1000
	h := newHarness(t, emulator.Config{
		Tokens: map[string]emulator.Workspace{testToken: {ID: "metrics", RateLimit: rateLimit, Attributes: []string{"referral_link", "lead_source", "company"}}},
	}, `  bad_attr:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: skip
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.url, to: custom_attributes.not_in_workspace}
metrics: {consumer_poll_interval: 200ms}
`)
	steps := []struct {
		body, msgID string
		want        domain.Outcome
		reason      string
		faults      *emulator.Faults // set for this step only
	}{
		{body: event("m1", "leads_update", "usr_1", "Ada", "ada@example.com"), want: domain.OutcomeCreated},
		{body: event("m2", "users_skip", "usr_2", "Grace", "grace@example.com"), want: domain.OutcomeCreated},
		{body: event("m3", "users_update", "usr_1", "Ada", "ada@example.com"), want: domain.OutcomeUpdated},
		{body: event("m4", "quiet", "usr_3", "Linus", "linus@example.com"), want: domain.OutcomeNothing},
		{body: event("m5", "winter_sale", "usr_4", "Alan", "alan@example.com"), want: domain.OutcomeUnconfigured},
		{body: event("m1", "leads_update", "usr_1", "Ada", "ada@example.com"), msgID: "m1-again", want: domain.OutcomeDuplicate},
		{body: `{"specversion":"1.0",`, want: domain.OutcomeDeadLettered, reason: domain.ReasonMalformed},
		{body: event("m7", "leads_update", "usr_5", "Bob", "bob(at)example"), want: domain.OutcomeDeadLettered, reason: domain.ReasonInvalidEmail},
		{body: event("m8", "bad_attr", "usr_6", "Cy", "cy@example.com"), want: domain.OutcomeDeadLettered, reason: "crm_rejected"},
		{body: event("m9", "leads_update", "usr_7", "Di", "di@example.com"), want: domain.OutcomeDeadLettered, reason: "attempts_exhausted",
			faults: &emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpSearchContacts}}},
	}
	for i, s := range steps {
		if s.faults != nil {
			if err := h.emu.SetFaults(*s.faults); err != nil {
				t.Fatal(err)
			}
		}
		h.publish(s.body, s.msgID)
		got := h.settled(i + 1)[i]
		if s.faults != nil {
			if err := h.emu.SetFaults(emulator.Faults{}); err != nil {
				t.Fatal(err)
			}
		}
		if got.Outcome != s.want || (s.reason != "" && got.Reason != s.reason) {
			t.Fatalf("step %d: got %s/%s (%v), want %s/%s", i+1, got.Outcome, got.Reason, got.Err, s.want, s.reason)
		}
	}

	addr := h.in.addr()
	// The backlog gauges are polled; wait for a poll after the last ack.
	opsWait(t, 5*time.Second, "the consumer backlog polled at rest", func() bool {
		mfs := opsScrape(t, addr)
		pending, n1 := metricValue(mfs, "referrer_sync_consumer_pending_messages", nil)
		ackPending, n2 := metricValue(mfs, "referrer_sync_consumer_ack_pending_messages", nil)
		return n1 == 1 && n2 == 1 && pending == 0 && ackPending == 0
	})
	mfs := opsScrape(t, addr)
	h.mu.Lock()
	verdicts := slices.Clone(h.verdicts)
	h.mu.Unlock()
	var settled, retried int
	for _, v := range verdicts {
		if v.Retry {
			retried++
		} else {
			settled++
		}
	}

	t.Run("events by outcome", func(t *testing.T) {
		// Every series a configured campaign can produce exists at 0
		// (metrics.Init); compare the counted ones.
		got := slices.DeleteFunc(seriesOf(mfs, "referrer_sync_events_total"), isZeroSeries)
		want := []string{
			"action=,campaign=_unconfigured,outcome=unconfigured,reason= 1",
			"action=,campaign=_unknown,outcome=dead_lettered,reason=malformed 1",
			"action=,campaign=leads_update,outcome=dead_lettered,reason=invalid_email 1", // the log's campaign
			"action=create_lead,campaign=bad_attr,outcome=dead_lettered,reason=crm_rejected 1",
			"action=create_lead,campaign=leads_update,outcome=created,reason= 1",
			"action=create_lead,campaign=leads_update,outcome=dead_lettered,reason=attempts_exhausted 1",
			"action=create_lead,campaign=leads_update,outcome=duplicate,reason= 1",
			"action=create_user,campaign=users_skip,outcome=created,reason= 1",
			"action=create_user,campaign=users_update,outcome=updated,reason= 1",
			"action=nothing,campaign=quiet,outcome=nothing,reason= 1",
		}
		if !slices.Equal(got, want) {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("dead letters by reason", func(t *testing.T) {
		got := slices.DeleteFunc(seriesOf(mfs, "referrer_sync_dead_letters_total"), isZeroSeries)
		want := []string{"reason=attempts_exhausted 1", "reason=crm_rejected 1", "reason=invalid_email 1", "reason=malformed 1"}
		if !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
		if n := len(h.deadLetters()); n != 4 {
			t.Errorf("dead-letter stream: got %d messages, want 4", n)
		}
	})

	t.Run("duplicates absorbed", func(t *testing.T) {
		if v, _ := metricValue(mfs, "referrer_sync_duplicates_absorbed_total", nil); v != 1 {
			t.Errorf("got %v, want 1", v)
		}
	})

	t.Run("retries", func(t *testing.T) {
		// max_attempts 3: the first two failed attempts are retried, the
		// third is dead-lettered.
		got := slices.DeleteFunc(seriesOf(mfs, "referrer_sync_retries_total"), isZeroSeries)
		if want := []string{"campaign=leads_update,cause=transient 2"}; !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
		if retried != 2 {
			t.Errorf("retried deliveries seen by the handler: got %d, want 2", retried)
		}
	})

	t.Run("processing time and event age", func(t *testing.T) {
		// Processing time is observed for every settled outcome but dead
		// letters: 2 created, 1 updated, 1 nothing, 1 unconfigured, 1
		// duplicate; event age for the same but the duplicate.
		if v, _ := metricValue(mfs, "referrer_sync_event_processing_seconds", nil); v != 6 {
			t.Errorf("processing observations: got %v, want 6", v)
		}
		if v, _ := metricValue(mfs, "referrer_sync_event_age_seconds", nil); v != 5 {
			t.Errorf("event age observations: got %v, want 5", v)
		}
	})

	t.Run("CRM requests match the CRM's request log", func(t *testing.T) {
		want := map[string]float64{}
		perOp := map[string]float64{}
		for _, r := range h.emu.Requests() {
			op, ok := clientOperation[r.Operation]
			if !ok {
				t.Fatalf("unexpected request %s %s (%q)", r.Method, r.Path, r.Operation)
			}
			want[fmt.Sprintf("connection=main,operation=%s,status=%d", op, r.Status)]++
			perOp[op]++
		}
		var wantSeries []string
		for k, v := range want {
			wantSeries = append(wantSeries, fmt.Sprintf("%s %g", k, v))
		}
		slices.Sort(wantSeries)
		if got := seriesOf(mfs, "referrer_sync_crm_requests_total"); !slices.Equal(got, wantSeries) {
			t.Errorf("got\n%s\nwant (from the emulator)\n%s", strings.Join(got, "\n"), strings.Join(wantSeries, "\n"))
		}
		for op, n := range perOp {
			if got, _ := metricValue(mfs, "referrer_sync_crm_request_duration_seconds", map[string]string{"operation": op}); got != n {
				t.Errorf("duration observations for %s: got %v, want %v", op, got, n)
			}
		}
		// The workload's shape, so the comparison above is not vacuous.
		for _, c := range []struct {
			labels map[string]string
			want   float64
		}{
			{map[string]string{"operation": "create", "status": "200"}, 2},
			{map[string]string{"operation": "create", "status": "400"}, 1},
			{map[string]string{"operation": "update", "status": "200"}, 1},
			{map[string]string{"operation": "create_attribute", "status": "200"}, 1},
		} {
			if got, _ := metricValue(mfs, "referrer_sync_crm_requests_total", c.labels); got != c.want {
				t.Errorf("crm_requests_total%v: got %v, want %v", c.labels, got, c.want)
			}
		}
		var fivexx float64
		for _, s := range []string{"500", "502", "503"} {
			v, _ := metricValue(mfs, "referrer_sync_crm_requests_total", map[string]string{"operation": "search", "status": s})
			fivexx += v
		}
		if fivexx < 3 {
			t.Errorf("search 5xx: got %v, want at least one per failed attempt (3)", fivexx)
		}
	})

	t.Run("rate limit remaining", func(t *testing.T) {
		v, n := metricValue(mfs, "referrer_sync_crm_rate_limit_remaining", map[string]string{"connection": "main"})
		if n != 1 || v < 0 || v >= rateLimit {
			t.Errorf("got %v (%d series), want one series in [0, %d)", v, n, rateLimit)
		}
	})

	t.Run("gauges at rest", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"referrer_sync_in_flight_messages", nil, 0},
			{"referrer_sync_ready", nil, 1},
			{"referrer_sync_build_info", map[string]string{"version": version}, 1},
			{"referrer_sync_config_generation", nil, 1},
			{"referrer_sync_config_reloads_total", map[string]string{"result": "success"}, 0},
			{"referrer_sync_config_reloads_total", map[string]string{"result": "failure"}, 0},
			{"referrer_sync_consumer_pending_messages", nil, 0},
			{"referrer_sync_consumer_ack_pending_messages", nil, 0},
		} {
			got, n := metricValue(mfs, c.name, c.labels)
			if n != 1 || got != c.want {
				t.Errorf("%s%v: got %v (%d series), want %v", c.name, c.labels, got, n, c.want)
			}
		}
		if _, n := metricValue(mfs, "referrer_sync_dry_run_events_total", nil); n != 0 {
			t.Errorf("dry-run series in a real run: got %d, want 0", n)
		}
	})

	t.Run("watermill router", func(t *testing.T) {
		ok, _ := metricValue(mfs, "referrer_sync_watermill_handler_execution_time_seconds", map[string]string{"success": "true"})
		failed, _ := metricValue(mfs, "referrer_sync_watermill_handler_execution_time_seconds", map[string]string{"success": "false"})
		if int(ok) != settled || int(failed) != retried {
			t.Errorf("handler executions: got %v ok / %v failed, want %d / %d (settled / retried)", ok, failed, settled, retried)
		}
		if v, _ := metricValue(mfs, "referrer_sync_watermill_subscriber_messages_received_total", nil); int(v) != len(verdicts) {
			t.Errorf("messages received: got %v, want %d deliveries", v, len(verdicts))
		}
	})

	t.Run("go and process collectors", func(t *testing.T) {
		for _, name := range []string{"go_goroutines", "go_info", "process_start_time_seconds", "process_resident_memory_bytes"} {
			if _, n := metricValue(mfs, name, nil); n == 0 {
				t.Errorf("%s is not exposed", name)
			}
		}
	})

	t.Run("promlint", func(t *testing.T) {
		gathered, err := h.in.metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		problems, err := promlint.NewWithMetricFamilies(gathered).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	})

	t.Run("ledger agrees", func(t *testing.T) {
		for id, want := range map[string]domain.Outcome{"m1": domain.OutcomeCreated, "m2": domain.OutcomeCreated, "m3": domain.OutcomeUpdated} {
			rec, ok, err := h.in.ledger.Event(context.Background(), "main", id)
			if err != nil || !ok || rec.Outcome != want {
				t.Errorf("%s: got %+v ok=%v err=%v, want %s", id, rec, ok, err, want)
			}
		}
	})
}

// TestCampaignLabelsOff: with metrics.campaign_labels false, no campaign
// id reaches a label, the zero series of metrics.Init included.
func TestCampaignLabelsOff(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "metrics: {campaign_labels: false}\n")
	h.publish(event("l1", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
	h.publish(event("l2", "winter_sale", "usr_2", "Bob", "bob@example.com"), "")
	h.settled(2)
	mfs := opsScrape(t, h.in.addr())
	for _, name := range []string{"referrer_sync_events_total", "referrer_sync_retries_total"} {
		for _, s := range seriesOf(mfs, name) {
			if !strings.Contains(s, "campaign=_all,") {
				t.Errorf("%s: %s, want campaign=_all", name, s)
			}
		}
	}
	got := slices.DeleteFunc(seriesOf(mfs, "referrer_sync_events_total"), isZeroSeries)
	want := []string{
		"action=,campaign=_all,outcome=unconfigured,reason= 1",
		"action=create_lead,campaign=_all,outcome=created,reason= 1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// isZeroSeries reports whether a seriesOf line has the value 0.
func isZeroSeries(s string) bool { return strings.HasSuffix(s, " 0") }
