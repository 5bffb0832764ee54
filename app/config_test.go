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
			name: "zero MaxAttempts takes the default",
			config: func() app.Config {
				c := full()
				c.MaxAttempts = 0
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
			name:   "everything missing, all reported at once",
			config: func() app.Config { return app.Config{MaxAttempts: -1} },
			want: []string{
				"app: Catalog is required",
				"app: Ledger is required",
				"app: People is required",
				"app: DeadLetters is required",
				"app: Metrics is required",
				"app: MaxAttempts -1 is negative",
			},
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

// TestDefaultMaxAttempts pins the default of five failed attempts,
// counted in the ledger, and the backstop of 20 deliveries per attempt.
func TestDefaultMaxAttempts(t *testing.T) {
	exhausted := app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted}
	tests := []struct {
		name     string
		failures int // recorded before this delivery
		attempt  int
		want     app.Verdict
	}{
		{name: "fifth delivery after three failures", failures: 3, attempt: 5, want: app.Verdict{Retry: true, Reason: "transient"}},
		{name: "first delivery after four failures", failures: 4, attempt: 1, want: exhausted},
		{name: "delivery 99 without a failure", attempt: 99, want: app.Verdict{Retry: true, Reason: "transient"}},
		{name: "delivery 100 without a failure", attempt: 100, want: exhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config()
			cfg.MaxAttempts = 0
			svc, err := app.New(cfg)
			if err != nil {
				t.Fatalf("New: got error %v, want none", err)
			}
			if tt.failures > 0 {
				h.ledger.seed(evt1Key, failures(tt.failures, now))
			}
			h.crm.createHook = failCreate(crmErr(ports.Transient))
			checkVerdict(t, svc.Handle(context.Background(), ev{}.at(tt.attempt)), tt.want)
		})
	}
}

// TestSearchLags pins how long a lead whose create is pending waits for the
// CRM's search: the connection's lag, or DefaultSearchLag.
func TestSearchLags(t *testing.T) {
	tests := []struct {
		name string
		lags map[string]time.Duration
		want time.Duration // the lag a create sent now waits out
	}{
		{name: "unset", want: app.DefaultSearchLag},
		{name: "set for the connection", lags: map[string]time.Duration{"intercom": 90 * time.Second}, want: 90 * time.Second},
		{name: "zero for the connection", lags: map[string]time.Duration{"intercom": 0}, want: app.DefaultSearchLag},
		{name: "set for another connection only", lags: map[string]time.Duration{"intercom_eu": time.Second}, want: app.DefaultSearchLag},
	}
	if app.DefaultSearchLag != 5*time.Minute {
		t.Errorf("DefaultSearchLag: got %v, want 5m (Intercom documents a few minutes)", app.DefaultSearchLag)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config()
			cfg.SearchLags = tt.lags
			svc, err := app.New(cfg)
			if err != nil {
				t.Fatalf("New: got error %v, want none", err)
			}
			h.people.seed("intercom", ada, "", pending("evt-0", now))
			checkVerdictIn(t, svc.Handle(context.Background(), ev{}.msg()),
				app.Verdict{Retry: true, Reason: "awaiting_search"}, awaitingSearch(tt.want))

			// Once the lag has passed, the lead is created.
			h.clock.Advance(tt.want)
			checkVerdict(t, svc.Handle(context.Background(), ev{}.at(2)), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"})
		})
	}
}

func TestNewDefaults(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Logger, cfg.Now = nil, nil
	svc, err := app.New(cfg)
	if err != nil {
		t.Fatalf("New: got error %v, want none", err)
	}
	// No logger and no clock: the service still handles, logs nowhere and
	// stamps with the real time.
	m := ev{Campaign: "camp_unlisted", NoTime: true}.msg()
	m.Published = time.Now().Add(-time.Hour)
	m.Received = time.Now()
	checkVerdict(t, svc.Handle(context.Background(), m), app.Verdict{Outcome: domain.OutcomeUnconfigured})
	if got := h.metrics.Durations(); len(got) != 1 || got[0] < time.Hour || got[0] > 2*time.Hour {
		t.Errorf("processed: got %v, want one duration of about an hour, measured with the real clock", got)
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
		{name: "initial catalog creates", msg: ev{ID: "e1"}.msg(), want: app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"}},
		{name: "initial catalog skips", msg: ev{ID: "e2"}.msg(), want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"}},
		{
			name: "swapped catalog updates",
			catalog: &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_lead": {Connection: "intercom",
				Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateUpdate, Fields: []domain.Field{emailField}}}},
			msg:  ev{ID: "e3"}.msg(),
			want: app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
		},
		{
			name:    "swapped catalog without the campaign",
			catalog: &domain.Catalog{},
			msg:     ev{ID: "e4"}.msg(),
			want:    app.Verdict{Outcome: domain.OutcomeUnconfigured},
		},
		{
			name:    "nil catalog",
			swapNil: true,
			msg:     ev{ID: "e5"}.msg(),
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
		got = append(got, r.Attrs["campaign"])
	}
	equalList(t, "warned campaigns", got, []string{"camp_x", "camp_y"})
	if n := len(h.metrics.Outcomes()); n != 5 {
		t.Errorf("outcomes counted: got %d, want 5 (every message, not only the first)", n)
	}
}

func TestDeadLetterRecord(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness)
		msg   app.Message
		want  ports.DeadLetter // Message and FirstSeen are checked separately
		// firstSeen lists the acceptable FirstSeen values.
		firstSeen []time.Time
	}{
		{
			name: "invalid event",
			msg: func() app.Message {
				m := delivery([]byte(`{"oops"`), 2)
				m.Sequence = 99
				return m
			}(),
			want: ports.DeadLetter{Body: []byte(`{"oops"`), Headers: map[string]string{"nats-msg-id": "m-1"}, Reason: domain.ReasonMalformed,
				Attempts: 2, Subject: "referrer.joined", Sequence: 99, Failed: now},
			firstSeen: []time.Time{{}},
		},
		{
			name: "CRM rejection at the first attempt",
			setup: func(h *harness) {
				h.crm.createHook = failCreate(&ports.Error{Op: "create", Kind: ports.Permanent, Status: 422})
			},
			msg: ev{ID: "evt-9"}.msg(),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: map[string]string{"nats-msg-id": "m-1"}, Reason: app.ReasonCRMRejected,
				Attempts: 1, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead", Failed: now},
			// No failure was recorded before this one: unknown, or now.
			firstSeen: []time.Time{{}, now},
		},
		{
			name: "CRM rejection after earlier failures",
			setup: func(h *harness) {
				h.ledger.seed("intercom/evt-9", failures(2, now.Add(-time.Hour)))
				h.crm.createHook = failCreate(&ports.Error{Op: "create", Kind: ports.Permanent, Status: 422})
			},
			msg: ev{ID: "evt-9"}.at(3),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: map[string]string{"nats-msg-id": "m-1"}, Reason: app.ReasonCRMRejected,
				Attempts: 3, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead", Failed: now},
			firstSeen: []time.Time{now.Add(-time.Hour)},
		},
		{
			name: "attempts exhausted",
			setup: func(h *harness) {
				h.ledger.seed("intercom/evt-9", failures(maxAttempts-1, now.Add(-time.Hour)))
				h.crm.findHook = failFind(&ports.Error{Op: "search", Kind: ports.Transient, Status: 503})
			},
			msg: ev{ID: "evt-9"}.at(7),
			want: ports.DeadLetter{Body: ev{ID: "evt-9"}.body(), Headers: map[string]string{"nats-msg-id": "m-1"}, Reason: app.ReasonAttemptsExhausted,
				Attempts: 7, Subject: "referrer.joined", Sequence: 42, EventID: "evt-9", Campaign: "camp_lead", Failed: now},
			firstSeen: []time.Time{now.Add(-time.Hour)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(h)
			}
			v := h.svc.Handle(context.Background(), tt.msg)
			letters := h.dlq.Letters()
			if len(letters) != 1 {
				t.Fatalf("dead letters: got %d, want 1", len(letters))
			}
			got := letters[0]
			if got.Message == "" || v.Err == nil || got.Message != v.Err.Error() {
				t.Errorf("Message: got %q, want the verdict's error %v", got.Message, v.Err)
			}
			if strings.Contains(got.Message, ada) {
				t.Errorf("Message: got %q, want no email address in it", got.Message)
			}
			if !slices.ContainsFunc(tt.firstSeen, got.FirstSeen.Equal) {
				t.Errorf("FirstSeen: got %v, want one of %v", got.FirstSeen, tt.firstSeen)
			}
			got.Message, got.FirstSeen = "", time.Time{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("dead letter:\n got %+v\nwant %+v", got, tt.want)
			}
			var inv *domain.InvalidEventError
			var crm *ports.Error
			if !errors.As(v.Err, &inv) && !errors.As(v.Err, &crm) {
				t.Errorf("verdict error: got %v, want the underlying cause kept", v.Err)
			}
		})
	}
}
