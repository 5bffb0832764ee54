package app_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

func equalList[T any](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

// checkVerdict compares the parts of a verdict a caller acts on.
func checkVerdict(t *testing.T, got, want app.Verdict) {
	t.Helper()
	if got.Outcome != want.Outcome || got.Retry != want.Retry || got.Reason != want.Reason || got.ContactID != want.ContactID || got.Delay != want.Delay {
		t.Errorf("verdict: got {Outcome:%q Retry:%v Reason:%q ContactID:%q Delay:%v Err:%v}, want {Outcome:%q Retry:%v Reason:%q ContactID:%q Delay:%v}",
			got.Outcome, got.Retry, got.Reason, got.ContactID, got.Delay, got.Err, want.Outcome, want.Retry, want.Reason, want.ContactID, want.Delay)
	}
	failed := got.Retry || got.Outcome == domain.OutcomeDeadLettered
	if failed != (got.Err != nil) {
		t.Errorf("verdict error: got %v, want an error exactly when retried or dead-lettered", got.Err)
	}
	if got.Retry && got.Outcome != "" {
		t.Errorf("retry verdict outcome: got %q, want none", got.Outcome)
	}
}

// checkCounted pins "every message ends in exactly one counted outcome":
// one Outcome call for a settled or dead-lettered verdict, none for a retry.
func checkCounted(t *testing.T, h *harness, v app.Verdict) {
	t.Helper()
	outcomes := h.metrics.Outcomes()
	switch {
	case v.Retry && len(outcomes) != 0:
		t.Errorf("outcomes counted for a retry: got %q, want none", outcomes)
	case !v.Retry && len(outcomes) != 1:
		t.Errorf("outcomes counted: got %q, want exactly one", outcomes)
	case !v.Retry && !strings.Contains(outcomes[0], "|"+string(v.Outcome)+"|"):
		t.Errorf("outcome counted: got %q, want the verdict's %q", outcomes[0], v.Outcome)
	}
}

// handleCase is one TestHandle case: a message, the state before it, and
// every effect expected of it.
type handleCase struct {
	name  string
	setup func(t *testing.T, h *harness)
	msg   app.Message
	want  app.Verdict

	wantCRM       []string // calls on connection "intercom"
	wantOutcomes  []string // "campaign|action|outcome|reason"
	wantRetries   []string // "campaign|kind"
	wantDead      []string // dead-letter reasons
	wantLedger    string   // fakeLedger.State
	wantProcessed []time.Duration
	check         func(t *testing.T, h *harness)
}

// checkIdentified pins that a verdict names its event and campaign
// whenever the message could be decoded, and nothing otherwise.
func checkIdentified(t *testing.T, got app.Verdict, m app.Message) {
	t.Helper()
	var wantID, wantCampaign string
	if e, err := domain.DecodeEvent(m.Body, m.Headers); err == nil {
		wantID, wantCampaign = e.ID, e.CampaignID
	}
	if got.EventID != wantID || got.Campaign != wantCampaign {
		t.Errorf("verdict identity: got event %q campaign %q, want %q, %q", got.EventID, got.Campaign, wantID, wantCampaign)
	}
}

func TestHandle(t *testing.T) {
	// handledOnce leaves the state of ev{} having been applied once.
	handledOnce := func(h *harness) { seedHandled(h, ev{}.msg()) }
	tests := []handleCase{
		// Creating.
		{
			name:          "new lead is created",
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				wantPerson(t, h, "intercom", adaPerson, "c1")
				c := h.crm.RawCalls()[1].Contact
				want := domain.Contact{Role: domain.RoleLead, Email: ada, Name: "Ada",
					Custom: map[string]any{"referral_link": "https://refer.example.com/ADA-7Q2"}}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("created contact: got %+v, want %+v", c, want)
				}
			},
		},
		{
			name:          "new user is created and found by external id",
			msg:           ev{Campaign: "camp_user"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find xid:usr_8812", "create user ada@example.com"},
			wantOutcomes:  []string{"camp_user|create_user|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "binary mode",
			msg:           ev{}.binary(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},

		// Existing contacts.
		{
			name:          "existing contact with policy skip writes nothing",
			setup:         func(t *testing.T, h *harness) { h.crm.seed(domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada}) },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "l1"},
			wantCRM:       []string{"find email:ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "done skipped l1",
			wantProcessed: []time.Duration{5 * time.Second},
			check:         func(t *testing.T, h *harness) { wantPerson(t, h, "intercom", adaPerson, "l1") },
		},
		{
			name:          "existing contact with policy update is updated without a role",
			setup:         func(t *testing.T, h *harness) { h.crm.seed(domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada}) },
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "l1"},
			wantCRM:       []string{"find email:ada@example.com", "update l1"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "done updated l1",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				wantPerson(t, h, "intercom", adaPerson, "l1")
				c := h.crm.RawCalls()[1].Contact
				if want := (domain.Contact{Email: ada, Name: "Ada"}); !reflect.DeepEqual(c, want) {
					t.Errorf("update: got %+v, want %+v", c, want)
				}
			},
		},
		{
			name: "several matches: the user is updated before an older lead",
			setup: func(t *testing.T, h *harness) {
				h.crm.seed(
					domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada, CreatedAt: 1},
					domain.Match{ID: "u2", Role: domain.RoleUser, Email: ada, CreatedAt: 9},
					domain.Match{ID: "u1", Role: domain.RoleUser, Email: ada, CreatedAt: 5},
				)
			},
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "u1"},
			wantCRM:       []string{"find email:ada@example.com", "update u1"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "done updated u1",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				if got := h.logs.Matching("several contacts match"); len(got) != 1 || got[0].Attrs["contact_id"] != "u1" {
					t.Errorf("ambiguity logs: got %+v, want one naming u1", got)
				}
			},
		},
		{
			name: "several matches: the external id match is updated first",
			setup: func(t *testing.T, h *harness) {
				h.crm.seed(
					domain.Match{ID: "u1", Role: domain.RoleUser, Email: ada, CreatedAt: 1},
					domain.Match{ID: "l9", Role: domain.RoleLead, Email: "old@example.com", ExternalID: "usr_8812", CreatedAt: 9},
				)
			},
			msg:           ev{Campaign: "camp_user"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "l9"},
			wantCRM:       []string{"find xid:usr_8812", "update l9"},
			wantOutcomes:  []string{"camp_user|create_user|updated|"},
			wantLedger:    "done updated l9",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "create answered existing (409) with policy skip is skipped",
			setup:         func(t *testing.T, h *harness) { h.crm.createHook = conflict(h, "c409") },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c409"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "done skipped c409",
			wantProcessed: []time.Duration{5 * time.Second},
			check:         func(t *testing.T, h *harness) { wantPerson(t, h, "intercom", adaPerson, "c409") },
		},
		{
			name:          "create answered existing (409) with policy update is updated",
			setup:         func(t *testing.T, h *harness) { h.crm.createHook = conflict(h, "c409") },
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c409"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com", "update c409"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "done updated c409",
			wantProcessed: []time.Duration{5 * time.Second},
			check:         func(t *testing.T, h *harness) { wantPerson(t, h, "intercom", adaPerson, "c409") },
		},
		{
			name: "known person with policy update: no search",
			setup: func(t *testing.T, h *harness) {
				h.people.set("intercom", adaPerson, "c7")
				h.crm.seed(domain.Match{ID: "c7", Role: domain.RoleLead, Email: ada})
			},
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c7"},
			wantCRM:       []string{"update c7"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "done updated c7",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "known person with policy skip: no CRM call at all",
			setup:         func(t *testing.T, h *harness) { h.people.set("intercom", adaPerson, "c7") },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "done skipped c7",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "person known on another connection only is searched",
			setup:         func(t *testing.T, h *harness) { h.people.set("intercom_eu", adaPerson, "eu7") },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:        "contact gone: forgotten and retried",
			setup:       func(t *testing.T, h *harness) { h.people.set("intercom", adaPerson, "c7") },
			msg:         ev{Campaign: "camp_update"}.msg(),
			want:        app.Verdict{Retry: true, Reason: "contact_gone"},
			wantCRM:     []string{"update c7"},
			wantRetries: []string{"camp_update|contact_gone"},
			wantLedger:  "released",
			check:       func(t *testing.T, h *harness) { wantNoPerson(t, h, "intercom", adaPerson) },
		},
		{
			name:          "a remembered empty id is not a contact",
			setup:         func(t *testing.T, h *harness) { h.people.emptyHit = true },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},

		// CRM failures.
		{
			name:        "transient error on create is retried and the claim released",
			setup:       func(t *testing.T, h *harness) { h.crm.createHook = failCreate(crmErr(ports.Transient)) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  "released",
		},
		{
			name: "rate limited search is retried after the CRM's window",
			setup: func(t *testing.T, h *harness) {
				h.crm.findHook = failFind(&ports.Error{Op: "search", Kind: ports.RateLimited, Status: 429, RetryAfter: 30 * time.Second})
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "rate_limited", Delay: 30 * time.Second},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|rate_limited"},
			wantLedger:  "released",
		},
		{
			name:        "an unclassified error is retried as transient",
			setup:       func(t *testing.T, h *harness) { h.crm.findHook = failFind(errors.New("connection reset")) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  "released",
		},
		{
			name:        "unauthorized before the last attempt is retried",
			setup:       func(t *testing.T, h *harness) { h.crm.findHook = failFind(crmErr(ports.Unauthorized)) },
			msg:         ev{}.at(maxAttempts - 1),
			want:        app.Verdict{Retry: true, Reason: "unauthorized"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|unauthorized"},
			wantLedger:  "released",
		},
		{
			name:         "permanent error on create is dead-lettered as crm_rejected",
			setup:        func(t *testing.T, h *harness) { h.crm.createHook = failCreate(crmErr(ports.Permanent)) },
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected},
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantLedger:   "released",
		},
		{
			name: "permanent error on update is dead-lettered as crm_rejected",
			setup: func(t *testing.T, h *harness) {
				h.people.set("intercom", adaPerson, "c7")
				h.crm.updateHook = func(context.Context, string, domain.Contact) error { return crmErr(ports.Permanent) }
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected},
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantLedger:   "released",
		},
		{
			name:         "transient error at the last attempt is dead-lettered as attempts_exhausted",
			setup:        func(t *testing.T, h *harness) { h.crm.createHook = failCreate(crmErr(ports.Transient)) },
			msg:          ev{}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   "released",
		},
		{
			name:         "transient error past the last attempt is dead-lettered",
			setup:        func(t *testing.T, h *harness) { h.crm.findHook = failFind(crmErr(ports.RateLimited)) },
			msg:          ev{}.at(maxAttempts + 2),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   "released",
		},
		{
			name:         "unauthorized at the last attempt is dead-lettered as unauthorized",
			setup:        func(t *testing.T, h *harness) { h.crm.findHook = failFind(crmErr(ports.Unauthorized)) },
			msg:          ev{}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonUnauthorized},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|unauthorized"},
			wantDead:     []string{app.ReasonUnauthorized},
			wantLedger:   "released",
		},
		{
			name:         "contact gone at the last attempt is dead-lettered as attempts_exhausted",
			setup:        func(t *testing.T, h *harness) { h.people.set("intercom", adaPerson, "c7") },
			msg:          ev{Campaign: "camp_update"}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   "released",
		},

		// The ledger.
		{
			name:         "an already applied event is a duplicate without any CRM call",
			setup:        func(t *testing.T, h *harness) { handledOnce(h) },
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate|"},
			wantLedger:   "done created c1",
			check:        func(t *testing.T, h *harness) { wantNoPeopleLookups(t, h) },
		},
		{
			name:         "the same id with another body is a duplicate: the id is the key",
			setup:        func(t *testing.T, h *harness) { handledOnce(h) },
			msg:          ev{Email: bob}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate|"},
			wantLedger:   "done created c1",
		},
		{
			name:          "another id for the same person is not a duplicate",
			setup:         func(t *testing.T, h *harness) { handledOnce(h) },
			msg:           ev{ID: "evt-2"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "done created c1; done skipped c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:        "claim held elsewhere is retried without any CRM call",
			setup:       func(t *testing.T, h *harness) { h.ledger.claimErr = ports.ErrClaimHeld },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "claim_held"},
			wantRetries: []string{"camp_lead|claim_held"},
			check:       func(t *testing.T, h *harness) { wantNoPeopleLookups(t, h) },
		},
		{
			name:        "claim failure is retried",
			setup:       func(t *testing.T, h *harness) { h.ledger.claimErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantRetries: []string{"camp_lead|ledger"},
		},
		{
			name:        "complete failure is retried, not counted",
			setup:       func(t *testing.T, h *harness) { h.ledger.completeErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
			wantLedger:  "held",
			check: func(t *testing.T, h *harness) {
				// The person is remembered, so the redelivery finds the
				// contact instead of creating a second one.
				wantPerson(t, h, "intercom", adaPerson, "c1")
			},
		},
		{
			name: "release failure still retries",
			setup: func(t *testing.T, h *harness) {
				h.crm.createHook = failCreate(crmErr(ports.Transient))
				h.ledger.releaseErr = errors.New("kv unavailable")
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  "held",
		},
		{
			name:        "person lookup failure is retried",
			setup:       func(t *testing.T, h *harness) { h.people.contactErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantRetries: []string{"camp_lead|ledger"},
			wantLedger:  "released",
		},
		{
			name:          "remembering failure loses only the shortcut",
			setup:         func(t *testing.T, h *harness) { h.people.rememberErr = errors.New("kv unavailable") },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},

		// Campaign settings.
		{
			name:          "unknown campaign without a default is unconfigured",
			msg:           ev{Campaign: "camp_new"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUnconfigured},
			wantOutcomes:  []string{"_unconfigured||unconfigured|"},
			wantProcessed: []time.Duration{5 * time.Second},
			check:         func(t *testing.T, h *harness) { wantNoPeopleLookups(t, h) },
		},
		{
			name: "unknown campaign with a default uses it under a bounded label",
			setup: func(t *testing.T, h *harness) {
				c := testCatalog()
				c.Default = &domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
				h.svc.SetCatalog(c)
			},
			msg:           ev{Campaign: "camp_new"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"_unconfigured|create_lead|created|"},
			wantLedger:    "done created c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "action nothing settles without the ledger or the CRM",
			msg:           ev{Campaign: "camp_nothing"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes:  []string{"camp_nothing|nothing|nothing|"},
			wantProcessed: []time.Duration{5 * time.Second},
			check:         func(t *testing.T, h *harness) { wantNoPeopleLookups(t, h) },
		},
		{
			name: "a connection without a CRM is retried",
			setup: func(t *testing.T, h *harness) {
				c := testCatalog()
				c.Campaigns["camp_hub"] = domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
				h.svc.SetCatalog(c)
			},
			msg:         ev{Campaign: "camp_hub"}.msg(),
			want:        app.Verdict{Retry: true, Reason: "no_crm"},
			wantRetries: []string{"camp_hub|no_crm"},
		},
		{
			name: "a connection without a CRM is dead-lettered at the last attempt",
			setup: func(t *testing.T, h *harness) {
				c := testCatalog()
				c.Campaigns["camp_hub"] = domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
				h.svc.SetCatalog(c)
			},
			msg:          ev{Campaign: "camp_hub"}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantOutcomes: []string{"camp_hub|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
		},

		// Invalid events.
		invalidCase("malformed JSON", []byte(`{"specversion":"1.0",`), domain.ReasonMalformed),
		invalidCase("wrong type", []byte(strings.Replace(string(ev{}.body()), `"type":"referrer.joined"`, `"type":"referrer.left"`, 1)), domain.ReasonWrongType),
		invalidCase("missing id", ev{ID: "  "}.body(), domain.ReasonMissingID),
		invalidCase("missing email", ev{Email: " "}.body(), domain.ReasonMissingEmail),
		invalidCase("invalid email", ev{Email: "ada(at)example.com"}.body(), domain.ReasonInvalidEmail),
		invalidCase("oversized", append(ev{}.body(), strings.Repeat(" ", domain.MaxEventSize)...), domain.ReasonTooLarge),
		invalidCase("missing campaign", ev{Campaign: " "}.body(), domain.ReasonMissingCampaign),
		{
			name:         "mapping error is dead-lettered under its campaign",
			msg:          ev{Campaign: "camp_badmap", Meta: map[string]any{"opt_out": "maybe"}}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: domain.ReasonMapping},
			wantOutcomes: []string{"camp_badmap|create_lead|dead_lettered|mapping"},
			wantDead:     []string{domain.ReasonMapping},
		},

		// Dead-letter failures.
		{
			name:        "dead-letter publish failure is retried, not counted",
			setup:       func(t *testing.T, h *harness) { h.dlq.err = errors.New("stream unavailable") },
			msg:         delivery([]byte(`{`), 1),
			want:        app.Verdict{Retry: true, Reason: "dead_letter_failed"},
			wantRetries: []string{"_unknown|dead_letter_failed"},
		},
		{
			name: "dead-letter publish failure after a CRM rejection is retried, not counted",
			setup: func(t *testing.T, h *harness) {
				h.crm.createHook = failCreate(crmErr(ports.Permanent))
				h.dlq.err = errors.New("stream unavailable")
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "dead_letter_failed"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|dead_letter_failed"},
			wantLedger:  "released",
		},
		{
			name: "dead-letter publish failure at the last attempt is retried, not counted",
			setup: func(t *testing.T, h *harness) {
				h.crm.createHook = failCreate(crmErr(ports.Transient))
				h.dlq.err = errors.New("stream unavailable")
			},
			msg:         ev{}.at(maxAttempts),
			want:        app.Verdict{Retry: true, Reason: "dead_letter_failed"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|dead_letter_failed"},
			wantLedger:  "released",
		},

		// Latency.
		{
			name:          "an event without a time is timed from its publication",
			msg:           ev{Campaign: "camp_nothing", NoTime: true}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes:  []string{"camp_nothing|nothing|nothing|"},
			wantProcessed: []time.Duration{time.Second},
		},
		{
			name: "an event without any time is not timed",
			msg: func() app.Message {
				m := ev{Campaign: "camp_nothing", NoTime: true}.msg()
				m.Published = time.Time{}
				return m
			}(),
			want:         app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes: []string{"camp_nothing|nothing|nothing|"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			got := h.svc.Handle(context.Background(), tt.msg)

			checkVerdict(t, got, tt.want)
			checkCounted(t, h, got)
			checkIdentified(t, got, tt.msg)
			equalList(t, "CRM calls", h.crm.Calls(""), tt.wantCRM)
			equalList(t, "other connection's CRM calls", h.crmEU.Calls(""), nil)
			equalList(t, "outcomes", h.metrics.Outcomes(), tt.wantOutcomes)
			equalList(t, "retries", h.metrics.Retries(), tt.wantRetries)
			equalList(t, "dead letters", h.dlq.Reasons(), tt.wantDead)
			equalList(t, "processed", h.metrics.Durations(), tt.wantProcessed)
			if got := h.ledger.State(); got != tt.wantLedger {
				t.Errorf("ledger: got %q, want %q", got, tt.wantLedger)
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}

// invalidCase is a TestHandle case for an event that can never be
// processed: dead-lettered under the unknown label, nothing else touched.
func invalidCase(name string, body []byte, reason string) handleCase {
	return handleCase{
		name:         "invalid event: " + name,
		msg:          delivery(body, 1),
		want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: reason},
		wantOutcomes: []string{"_unknown||dead_lettered|" + reason},
		wantDead:     []string{reason},
		check:        func(t *testing.T, h *harness) { wantNoPeopleLookups(t, h) },
	}
}

// seedHandled runs a message through the service and then clears the
// recorders, leaving the state (ledger, people, contacts) behind.
func seedHandled(h *harness, m app.Message) {
	if v := h.svc.Handle(context.Background(), m); v.Retry || v.Outcome == domain.OutcomeDeadLettered {
		panic("seedHandled: " + v.Reason)
	}
	h.crm.reset()
	h.metrics.reset()
	h.people.resetCounts()
}

func conflict(h *harness, id string) func(context.Context, domain.Contact) (ports.Created, error) {
	return func(_ context.Context, c domain.Contact) (ports.Created, error) {
		h.crm.seed(domain.Match{ID: id, Role: c.Role, Email: c.Email})
		return ports.Created{ID: id, Existing: true}, nil
	}
}

func failCreate(err error) func(context.Context, domain.Contact) (ports.Created, error) {
	return func(context.Context, domain.Contact) (ports.Created, error) { return ports.Created{}, err }
}

func failFind(err error) func(context.Context, domain.Identity) ([]domain.Match, error) {
	return func(context.Context, domain.Identity) ([]domain.Match, error) { return nil, err }
}

func wantPerson(t *testing.T, h *harness, conn string, who domain.Identity, want string) {
	t.Helper()
	if got, ok := h.people.Known(conn, who); !ok || got != want {
		t.Errorf("remembered contact of %s on %s: got %q (known %v), want %q", who.Key(), conn, got, ok, want)
	}
}

func wantNoPerson(t *testing.T, h *harness, conn string, who domain.Identity) {
	t.Helper()
	if got, ok := h.people.Known(conn, who); ok {
		t.Errorf("remembered contact of %s on %s: got %q, want none", who.Key(), conn, got)
	}
}

func wantNoPeopleLookups(t *testing.T, h *harness) {
	t.Helper()
	if n := h.people.Lookups(); n != 0 {
		t.Errorf("person lookups: got %d, want 0", n)
	}
}
