package app_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

func TestConfigValidate(t *testing.T) {
	lead := func(conn string) domain.Campaign {
		return domain.Campaign{Connection: conn, Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
			Fields: []domain.Field{emailField}}
	}
	full := func() app.Config { return newHarness(t).config() }
	tests := []struct {
		name   string
		config func() app.Config
		want   []string // the joined error's lines; none when valid
	}{
		{name: "complete", config: full},
		{
			name: "zero values take the defaults",
			config: func() app.Config {
				c := full()
				c.MaxAttempts, c.Lease, c.Remember, c.MaxEvents, c.SearchLags, c.CommitGraces = 0, 0, 0, 0, nil, nil
				return c
			},
		},
		{
			name: "a zero search lag or commit grace takes the default",
			config: func() app.Config {
				c := full()
				c.SearchLags = map[string]time.Duration{"intercom": 0}
				c.CommitGraces = map[string]time.Duration{"intercom": 0}
				return c
			},
		},
		{
			name: "nothing campaigns need no CRM",
			config: func() app.Config {
				c := full()
				c.Catalog = &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_n": {Connection: "hubspot", Action: domain.ActionNothing}},
					Default: &domain.Campaign{Action: domain.ActionNothing}}
				return c
			},
		},
		{
			name: "everything missing or negative, all reported at once",
			config: func() app.Config {
				return app.Config{MaxAttempts: -1, Lease: -time.Second, Remember: -time.Hour,
					SearchLags:   map[string]time.Duration{"intercom_eu": -time.Minute, "intercom": -time.Minute},
					CommitGraces: map[string]time.Duration{"intercom": -time.Second}}
			},
			want: []string{
				"app: Catalog is required",
				"app: Ledger is required",
				"app: DeadLetters is required",
				"app: Metrics is required",
				"app: MaxAttempts -1 is negative",
				"app: Lease -1s is negative",
				"app: Remember and MaxEvents must not be negative",
				"app: search lag of connection intercom is negative",
				"app: search lag of connection intercom_eu is negative",
				"app: commit grace of connection intercom is negative",
			},
		},
		{
			name: "a negative MaxEvents",
			config: func() app.Config {
				c := full()
				c.MaxEvents = -1
				return c
			},
			want: []string{"app: Remember and MaxEvents must not be negative"},
		},
		{
			name: "campaigns and the default without a CRM, sorted",
			config: func() app.Config {
				c := full()
				c.Metrics = nil
				c.Catalog = &domain.Catalog{
					Campaigns: map[string]domain.Campaign{
						"camp_c": lead("hubspot"),
						"camp_a": lead("salesforce"),
						"camp_b": lead("intercom"),
						"camp_n": {Connection: "hubspot", Action: domain.ActionNothing},
						"camp_e": lead("pipedrive"),
						"camp_d": lead("hubspot"),
					},
					Default: &domain.Campaign{Connection: "zendesk", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateSkip},
				}
				return c
			},
			want: []string{
				"app: Metrics is required",
				`app: campaign camp_a uses connection "salesforce", which has no CRM`,
				`app: campaign camp_c uses connection "hubspot", which has no CRM`,
				`app: campaign camp_d uses connection "hubspot", which has no CRM`,
				`app: campaign camp_e uses connection "pipedrive", which has no CRM`,
				`app: default_campaign uses connection "zendesk", which has no CRM`,
			},
		},
		{
			name: "a CRM map without the connection",
			config: func() app.Config {
				c := full()
				c.CRMs = map[string]ports.CRM{"intercom": c.CRMs["intercom"]}
				return c
			},
			want: []string{`app: campaign camp_eu uses connection "intercom_eu", which has no CRM`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.config()
			err := cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Validate:\n got %q\nwant %q", got, tt.want)
			}
			svc, err := app.New(cfg)
			switch {
			case len(tt.want) == 0 && (err != nil || svc == nil):
				t.Errorf("New: got %v, %v, want a service", svc, err)
			case len(tt.want) > 0 && (err == nil || svc != nil || err.Error() != strings.Join(tt.want, "\n")):
				t.Errorf("New: got %v, %v, want nil and the Validate error", svc, err)
			}
		})
	}
}

// TestDefaultMaxAttempts pins the default of five failed attempts, counted
// in the ledger; deliveries themselves are no limit.
func TestDefaultMaxAttempts(t *testing.T) {
	if app.DefaultMaxAttempts != 5 {
		t.Errorf("DefaultMaxAttempts: got %d, want 5", app.DefaultMaxAttempts)
	}
	tests := []struct {
		name     string
		failures int // recorded before this delivery
		attempt  int
		want     app.Verdict
		wantCRM  int
	}{
		{name: "fifth delivery after three failures", failures: 3, attempt: 5, want: retryTrans, wantCRM: 1},
		{name: "first delivery after four failures: the fifth failure dead-letters", failures: 4, attempt: 1, want: deadExhaust, wantCRM: 1},
		{name: "after five failures: dead-lettered without a CRM call", failures: 5, attempt: 1, want: deadExhaust},
		{name: "delivery 1000 without a failure", attempt: 1000, want: retryTrans, wantCRM: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config()
			cfg.MaxAttempts = 0
			svc := h.replica(t, cfg)
			if tt.failures > 0 {
				seedPerson(t, h, ports.Person{Events: []ports.EventRecord{{ID: "evt-1", Failures: tt.failures, Reason: app.CauseTransient, At: now}}})
			}
			faults(h).on("find", 0, memory.Fault{Err: transientErr})
			checkVerdict(t, svc.Handle(context.Background(), ev{}.at(tt.attempt)), tt.want)
			if n := len(h.crm.Calls()); n != tt.wantCRM {
				t.Errorf("CRM calls: got %d, want %d", n, tt.wantCRM)
			}
		})
	}
}

// TestSearchLags pins how long a lead whose create is pending is waited
// for after its not-after: the commit grace, then the connection's search
// lag, or DefaultSearchLag.
func TestSearchLags(t *testing.T) {
	if app.DefaultSearchLag != 5*time.Minute {
		t.Errorf("DefaultSearchLag: got %v, want 5m (Intercom documents a few minutes)", app.DefaultSearchLag)
	}
	tests := []struct {
		name string
		lags map[string]time.Duration
		want time.Duration // the lag a create whose not-after is now waits out
	}{
		{name: "unset", want: app.DefaultSearchLag},
		{name: "set for the connection", lags: map[string]time.Duration{"intercom": 90 * time.Second}, want: 90 * time.Second},
		{name: "zero for the connection", lags: map[string]time.Duration{"intercom": 0}, want: app.DefaultSearchLag},
		{name: "set for another connection only", lags: map[string]time.Duration{"intercom_eu": time.Second}, want: app.DefaultSearchLag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config()
			cfg.SearchLags = tt.lags
			svc := h.replica(t, cfg)
			seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now)})
			checkVerdict(t, svc.Handle(context.Background(), ev{}.msg()), awaitingFor(grace+tt.want))

			// One moment before the lag has passed, still waiting; then
			// the lead is created.
			h.clock.Advance(grace + tt.want - time.Millisecond)
			checkVerdict(t, svc.Handle(context.Background(), ev{}.at(2)), awaitingFor(time.Millisecond))
			h.clock.Advance(time.Millisecond)
			checkVerdict(t, svc.Handle(context.Background(), ev{}.at(3)), createdC1)
		})
	}
}

// TestCommitGraces pins how long a create with an external id, not found
// by it, is waited for after its not-after, in case it lands late: the
// connection's commit grace, or DefaultCommitGrace.
func TestCommitGraces(t *testing.T) {
	if app.DefaultCommitGrace != 30*time.Second {
		t.Errorf("DefaultCommitGrace: got %v, want 30s", app.DefaultCommitGrace)
	}
	tests := []struct {
		name   string
		graces map[string]time.Duration
		want   time.Duration
	}{
		{name: "unset", want: app.DefaultCommitGrace},
		{name: "set for the connection", graces: map[string]time.Duration{"intercom": 5 * time.Second}, want: 5 * time.Second},
		{name: "zero for the connection", graces: map[string]time.Duration{"intercom": 0}, want: app.DefaultCommitGrace},
		{name: "set for another connection only", graces: map[string]time.Duration{"intercom_eu": time.Second}, want: app.DefaultCommitGrace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config()
			cfg.CommitGraces = tt.graces
			svc := h.replica(t, cfg)
			p := pendingBy("evt-0", now)
			p.ExternalID = "usr_0"
			seedPerson(t, h, ports.Person{Pending: p})
			checkVerdict(t, svc.Handle(context.Background(), ev{Campaign: "camp_user"}.msg()), awaitingFor(tt.want))
			h.clock.Advance(tt.want - time.Millisecond)
			checkVerdict(t, svc.Handle(context.Background(), ev{Campaign: "camp_user"}.at(2)), awaitingFor(time.Millisecond))
			h.clock.Advance(time.Millisecond)
			checkVerdict(t, svc.Handle(context.Background(), ev{Campaign: "camp_user"}.at(3)), createdC1)
		})
	}
}

// TestLease pins a create's not-after: Lease after it is recorded, or the
// delivery's deadline when that comes first; and that whoever finds the
// person waits exactly until then.
func TestLease(t *testing.T) {
	if app.DefaultLease != 10*time.Second {
		t.Errorf("DefaultLease: got %v, want 10s", app.DefaultLease)
	}
	tests := []struct {
		name     string
		lease    time.Duration
		deadline time.Duration // the delivery's deadline after the clock's now; 0: none
		want     time.Duration // the not-after, after now
	}{
		{name: "default", want: app.DefaultLease},
		{name: "configured", lease: 3 * time.Second, want: 3 * time.Second},
		{name: "the delivery's deadline comes first", lease: 3 * time.Second, deadline: 2 * time.Second, want: 2 * time.Second},
		{name: "the lease comes first", lease: 3 * time.Second, deadline: time.Minute, want: 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			// A context deadline is real time: move the harness's clock
			// past the real one, so a deadline after it has not expired.
			h.clock.Advance(time.Since(now) + time.Hour)
			start := h.clock.Now()
			cfg := h.config()
			cfg.Lease, cfg.Owner = tt.lease, "replica-7"
			svc := h.replica(t, cfg)
			var pending *ports.PendingCreate
			faults(h).with("create", func(memory.Call) { pending = person(t, h, "intercom", ada).Pending }, memory.Fault{LoseResponse: true})
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, start.Add(tt.deadline))
				defer cancel()
			}
			checkVerdict(t, svc.Handle(ctx, ev{}.msg()), retryTrans)
			want := &ports.PendingCreate{EventID: "evt-1", Owner: "replica-7", NotAfter: start.Add(tt.want)}
			if !reflect.DeepEqual(pending, want) {
				t.Errorf("pending create when sent: got %+v, want %+v", pending, want)
			}
			// Another replica waits for exactly that long.
			checkVerdict(t, h.svc.Handle(context.Background(), ev{ID: "evt-2"}.msg()), busyFor(tt.want))
		})
	}
}

func TestNewDefaults(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Logger, cfg.Now, cfg.Jitter = nil, nil, nil
	svc, err := app.New(cfg)
	if err != nil {
		t.Fatalf("New: got error %v, want none", err)
	}
	// No logger and no clock: the service still handles, logs nowhere and
	// measures with the real time.
	m := ev{Campaign: "camp_unlisted", NoTime: true}.msg()
	m.Received, m.Published = time.Time{}, time.Now().Add(-time.Hour)
	checkVerdict(t, svc.Handle(context.Background(), m), app.Verdict{Outcome: domain.OutcomeUnconfigured})
	if got := h.metrics.EventAges(); len(got) != 1 || got[0] < time.Hour || got[0] > 2*time.Hour {
		t.Errorf("event ages: got %v, want one of about an hour, measured with the real clock", got)
	}

	// The default owner names the process in a pending create, and the
	// real clock and jitter time the wait of whoever finds it.
	h.crm.Fault = (&crmFaults{}).on("create", 1, memory.Fault{LoseResponse: true}).fault
	v := svc.Handle(context.Background(), ev{}.msg())
	checkVerdict(t, v, retryTrans)
	p := person(t, h, "intercom", ada)
	if p.Pending == nil || p.Pending.Owner == "" {
		t.Fatalf("pending create: got %+v, want one naming its owner", p.Pending)
	}
	v = svc.Handle(context.Background(), ev{ID: "evt-2"}.msg())
	if v.Reason != app.CausePersonBusy || v.Delay <= 0 || v.Delay > app.DefaultLease+time.Second {
		t.Errorf("verdict: got %s after %v, want person_busy for at most the lease and the jitter", v.Reason, v.Delay)
	}
}

func TestSetCatalog(t *testing.T) {
	h := newHarness(t)
	steps := []struct {
		name    string
		catalog *domain.Catalog // swapped in before the step; nil = keep
		swapNil bool
		msg     app.Message
		want    app.Verdict
	}{
		{name: "initial catalog creates", msg: ev{ID: "e1"}.msg(), want: createdC1},
		{name: "initial catalog skips", msg: ev{ID: "e2"}.msg(), want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"}},
		{
			name: "swapped catalog updates",
			catalog: &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_lead": {Connection: "intercom",
				Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateUpdate, Fields: []domain.Field{emailField}}}},
			msg:  ev{ID: "e3"}.msg(),
			want: app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
		},
		{
			name: "swapped catalog naming a connection without a CRM waits, so a corrected catalog still applies the event",
			catalog: &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_lead": {Connection: "hubspot",
				Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateUpdate, Fields: []domain.Field{emailField}}}},
			msg:  ev{ID: "e4"}.msg(),
			want: app.Verdict{Retry: true, Wait: true, Reason: app.CauseNoCRM},
		},
		{
			name:    "swapped catalog without the campaign",
			catalog: &domain.Catalog{},
			msg:     ev{ID: "e5"}.msg(),
			want:    app.Verdict{Outcome: domain.OutcomeUnconfigured},
		},
		{
			name:    "nil catalog",
			swapNil: true,
			msg:     ev{ID: "e6"}.msg(),
			want:    app.Verdict{Outcome: domain.OutcomeUnconfigured},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			switch {
			case st.swapNil:
				h.svc.SetCatalog(nil)
			case st.catalog != nil:
				h.svc.SetCatalog(st.catalog)
			}
			checkVerdict(t, h.svc.Handle(context.Background(), st.msg), st.want)
		})
	}
	equalList(t, "CRM calls", callsOf(h.crm), []string{"find email:ada@example.com", "create lead ada@example.com", "update c1"})
}

func TestUnconfiguredLoggedOncePerCampaign(t *testing.T) {
	h := newHarness(t)
	for i, c := range []string{"camp_x", "camp_x", "camp_y", "camp_x", "camp_y"} {
		v := h.svc.Handle(context.Background(), ev{ID: string(rune('a' + i)), Campaign: c}.msg())
		checkVerdict(t, v, app.Verdict{Outcome: domain.OutcomeUnconfigured})
	}
	var got []string
	for _, r := range h.logs.Matching("not configured") {
		if r.Level != slog.LevelWarn {
			t.Errorf("level: got %v, want %v", r.Level, slog.LevelWarn)
		}
		c, _ := r.Attrs["campaign"].(string)
		got = append(got, c)
	}
	equalList(t, "warned campaigns", got, []string{"camp_x", "camp_y"})
	if n := len(h.metrics.Outcomes()); n != 5 {
		t.Errorf("outcomes counted: got %d, want 5 (every message, not only the first)", n)
	}
	if r, w := h.ledger.Ops(); r+w != 0 {
		t.Errorf("ledger operations: got %d reads %d writes, want none", r, w)
	}
}

// TestRemember pins the bound on the events kept per person: a duplicate
// is recognised while its event is remembered; the oldest settled events
// go first, then those settled longer than Remember ago; an event whose
// outcome its own message has yet to count, and one still failing, stay.
func TestRemember(t *testing.T) {
	settledAt := func(id string, at time.Time) ports.EventRecord {
		return ports.EventRecord{ID: id, Outcome: domain.OutcomeSkipped, ContactID: "c7", At: at, CountedBy: seeded}
	}
	tests := []struct {
		name      string
		maxEvents int
		remember  time.Duration
		events    []ports.EventRecord
		want      string // Ada's record after evt-9 is skipped
	}{
		{
			name: "within the bounds, all kept", maxEvents: 4, remember: time.Hour,
			events: []ports.EventRecord{settledAt("evt-1", now), settledAt("evt-2", now)},
			want:   adaRec + " contact=c7 | evt-1 skipped c7 | evt-2 skipped c7 | evt-9 skipped c7",
		},
		{
			name: "beyond MaxEvents, the oldest settled go", maxEvents: 2, remember: time.Hour,
			events: []ports.EventRecord{settledAt("evt-1", now), settledAt("evt-2", now), settledAt("evt-3", now)},
			want:   adaRec + " contact=c7 | evt-3 skipped c7 | evt-9 skipped c7",
		},
		{
			name: "settled longer than Remember ago, gone", maxEvents: 4, remember: time.Hour,
			events: []ports.EventRecord{settledAt("evt-1", now.Add(-2*time.Hour)), settledAt("evt-2", now.Add(-time.Minute))},
			want:   adaRec + " contact=c7 | evt-2 skipped c7 | evt-9 skipped c7",
		},
		{
			name: "uncounted and failing events stay beyond MaxEvents", maxEvents: 3, remember: time.Hour,
			events: []ports.EventRecord{
				{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c7", At: now.Add(-2 * time.Hour)},
				{ID: "evt-2", Failures: 1, Reason: app.CauseTransient, At: now.Add(-2 * time.Hour)},
				settledAt("evt-3", now),
			},
			want: adaRec + " contact=c7 | evt-1 created c7 unreported | evt-2 failing failures=1 reason=transient | evt-9 skipped c7",
		},
		{
			// Otherwise the event's redelivery is applied again.
			name: "the event a write settles is kept, even when only it could go", maxEvents: 1, remember: time.Hour,
			events: []ports.EventRecord{
				{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c7", At: now.Add(-2 * time.Hour)},
				{ID: "evt-2", Failures: 1, Reason: app.CauseTransient, At: now},
				settledAt("evt-3", now),
			},
			want: adaRec + " contact=c7 | evt-1 created c7 unreported | evt-2 failing failures=1 reason=transient | evt-9 skipped c7",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config()
			cfg.MaxEvents, cfg.Remember = tt.maxEvents, tt.remember
			svc := h.replica(t, cfg)
			seedPerson(t, h, ports.Person{ContactID: "c7", Events: tt.events})
			checkVerdict(t, svc.Handle(context.Background(), ev{ID: "evt-9"}.msg()), app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"})
			if got := personState(person(t, h, "intercom", ada)); got != tt.want {
				t.Errorf("record:\n got %q\nwant %q", got, tt.want)
			}
		})
	}

	t.Run("a forgotten event is applied again", func(t *testing.T) {
		h := newHarness(t)
		cfg := h.config()
		cfg.MaxEvents = 1
		svc := h.replica(t, cfg)
		seedPerson(t, h, ports.Person{ContactID: "c7"})
		skipped := app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"}
		checkVerdict(t, svc.Handle(context.Background(), ev{ID: "evt-1"}.msg()), skipped)
		checkVerdict(t, svc.Handle(context.Background(), ev{ID: "evt-1"}.at(2)), app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c7"})
		checkVerdict(t, svc.Handle(context.Background(), ev{ID: "evt-2"}.msg()), skipped)
		checkVerdict(t, svc.Handle(context.Background(), ev{ID: "evt-1"}.at(3)), skipped)
	})
}

func TestDeadLetterRecord(t *testing.T) {
	headers := map[string][]string{"Nats-Msg-Id": {"m-1"}, "X-Trace": {"a", "b"}}
	withHeaders := func(m app.Message) app.Message {
		m.OriginalHeaders = headers
		return m
	}
	failingFor := func(id string, n int) func(t *testing.T, h *harness) {
		return func(t *testing.T, h *harness) {
			seedPerson(t, h, ports.Person{Events: []ports.EventRecord{
				{ID: id, Failures: n, Reason: app.CauseTransient, FirstFailure: now.Add(-time.Hour), At: now.Add(-time.Minute)}}})
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, h *harness)
		msg   app.Message
		want  ports.DeadLetter // Message is checked separately
	}{
		{
			name: "invalid event",
			msg: func() app.Message {
				m := withHeaders(delivery([]byte(`{"oops"`), 2))
				m.Sequence = 99
				return m
			}(),
			want: ports.DeadLetter{Body: []byte(`{"oops"`), Headers: headers, Reason: domain.ReasonMalformed,
				Attempts: 2, Subject: "referrer.joined", Sequence: 99, Failed: now},
		},
		{
			name: "invalid email",
			msg:  withHeaders(ev{Email: "ada(at)example.com"}.msg()),
			want: ports.DeadLetter{Body: ev{Email: "ada(at)example.com"}.body(), Headers: headers, Reason: domain.ReasonInvalidEmail,
				Attempts: 1, Subject: "referrer.joined", Sequence: 42, EventID: "evt-1", Campaign: "camp_lead", Failed: now},
		},
		{
			name: "CRM rejection at the first attempt",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("create", 0, memory.Fault{Err: &ports.Error{Op: "create", Kind: ports.Permanent, Status: 422}})
			},
			msg: withHeaders(ev{ID: "evt-9"}.msg()),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: headers, Reason: app.ReasonCRMRejected,
				Attempts: 1, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead", Failed: now},
		},
		{
			name: "CRM rejection after earlier failures",
			setup: func(t *testing.T, h *harness) {
				failingFor("evt-9", 2)(t, h)
				faults(h).on("create", 0, memory.Fault{Err: &ports.Error{Op: "create", Kind: ports.Permanent, Status: 422}})
			},
			msg: withHeaders(ev{ID: "evt-9"}.at(3)),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: headers, Reason: app.ReasonCRMRejected,
				Attempts: 3, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead",
				FirstSeen: now.Add(-time.Hour), Failed: now},
		},
		{
			name: "attempts exhausted",
			setup: func(t *testing.T, h *harness) {
				failingFor("evt-9", maxAttempts-1)(t, h)
				faults(h).on("find", 0, memory.Fault{Err: &ports.Error{Op: "search", Kind: ports.Transient, Status: 503}})
			},
			msg: withHeaders(ev{ID: "evt-9"}.at(7)),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: headers, Reason: app.ReasonAttemptsExhausted,
				Attempts: 7, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead",
				FirstSeen: now.Add(-time.Hour), Failed: now},
		},
		{
			name: "deliveries exhausted",
			setup: func(t *testing.T, h *harness) {
				failingFor("evt-9", 1)(t, h)
				faults(h).on("find", 0, memory.Fault{Err: &ports.Error{Op: "search", Kind: ports.Transient, Status: 503}})
			},
			msg: withHeaders(lastDelivery(ev{ID: "evt-9"}.at(11))),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: headers, Reason: app.ReasonDeliveriesExhausted,
				Attempts: 11, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead",
				FirstSeen: now.Add(-time.Hour), Failed: now},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			v := h.svc.Handle(context.Background(), tt.msg)
			letters := h.dlq.Letters()
			if len(letters) != 1 {
				t.Fatalf("dead letters: got %d, want 1 (verdict %+v)", len(letters), v)
			}
			got := letters[0]
			if got.Message == "" || v.Err == nil || got.Message != v.Err.Error() {
				t.Errorf("Message: got %q, want the verdict's error %v", got.Message, v.Err)
			}
			if strings.Contains(strings.ToLower(got.Message), "ada") {
				t.Errorf("Message: got %q, want no email address in it", got.Message)
			}
			got.Message = ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("dead letter:\n got %+v\nwant %+v", got, tt.want)
			}
			var inv *domain.InvalidEventError
			var crm *ports.Error
			if !errors.As(v.Err, &inv) && !errors.As(v.Err, &crm) {
				t.Errorf("verdict error: got %v, want the underlying cause kept", v.Err)
			}
			if v.Outcome != domain.OutcomeDeadLettered || !slices.Equal(deadReasons(h.dlq), []string{tt.want.Reason}) {
				t.Errorf("verdict: got %q %q, want dead_lettered %q", v.Outcome, v.Reason, tt.want.Reason)
			}
		})
	}
}
