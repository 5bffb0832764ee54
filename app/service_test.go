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

// delayRange is the span a jittered Delay must fall in, both ends
// included. The zero value asks for exactly the wanted verdict's Delay.
type delayRange struct{ lo, hi time.Duration }

// jittered is the span of base plus the service's jitter of j ± 50 %.
func jittered(base, j time.Duration) delayRange { return delayRange{base + j/2, base + j + j/2} }

// personBusy is the span of the Delay of a person_busy retry.
var personBusy = jittered(0, 500*time.Millisecond)

// awaitingSearch is the span of the Delay of an awaiting_search retry when
// the search lag has wait left to run.
func awaitingSearch(wait time.Duration) delayRange { return jittered(wait, 250*time.Millisecond) }

// checkVerdict compares the parts of a verdict a caller acts on.
func checkVerdict(t *testing.T, got, want app.Verdict) {
	t.Helper()
	checkVerdictIn(t, got, want, delayRange{})
}

// checkVerdictIn is checkVerdict with the Delay in a span, unless d is
// the zero span.
func checkVerdictIn(t *testing.T, got, want app.Verdict, d delayRange) {
	t.Helper()
	delayOK := got.Delay == want.Delay
	if d != (delayRange{}) {
		delayOK = got.Delay >= d.lo && got.Delay <= d.hi
	}
	if got.Outcome != want.Outcome || got.Retry != want.Retry || got.Reason != want.Reason || got.ContactID != want.ContactID || !delayOK {
		wantDelay := want.Delay.String()
		if d != (delayRange{}) {
			wantDelay = "[" + d.lo.String() + ", " + d.hi.String() + "]"
		}
		t.Errorf("verdict: got {Outcome:%q Retry:%v Reason:%q ContactID:%q Delay:%v Err:%v}, want {Outcome:%q Retry:%v Reason:%q ContactID:%q Delay:%s}",
			got.Outcome, got.Retry, got.Reason, got.ContactID, got.Delay, got.Err, want.Outcome, want.Retry, want.Reason, want.ContactID, wantDelay)
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

// checkIdentified pins that a verdict names its event and campaign as far
// as the message could be read: a rejected event keeps its id and campaign
// when they were readable.
func checkIdentified(t *testing.T, got app.Verdict, m app.Message) {
	t.Helper()
	e, _ := domain.DecodeEvent(m.Body, m.Headers)
	if got.EventID != e.ID || got.Campaign != e.CampaignID {
		t.Errorf("verdict identity: got event %q campaign %q, want %q, %q", got.EventID, got.Campaign, e.ID, e.CampaignID)
	}
}

// handleCase is one TestHandle case: a message, the state before it, and
// every effect expected of it.
type handleCase struct {
	name  string
	setup func(t *testing.T, h *harness)
	msg   app.Message
	want  app.Verdict
	delay delayRange // when the Delay is jittered

	wantCRM       []string // calls on connection "intercom"
	wantOutcomes  []string // "campaign|action|outcome|reason"
	wantRetries   []string // "campaign|kind"
	wantDead      []string // dead-letter reasons
	wantLedger    string   // fakeLedger.State
	wantPeople    string   // fakePeople.State
	wantProcessed []time.Duration
	check         func(t *testing.T, h *harness)
}

// States of Ada's person record.
const (
	adaEmpty   = "intercom/ada@example.com: empty"
	adaCreated = "intercom/ada@example.com: contact=c1"
)

// firstFailed is the ledger state after the default event's first failed
// attempt at the start of the clock.
const firstFailed = "intercom/evt-1: failures=1 first=10:00:05"

func TestHandle(t *testing.T) {
	// handledOnce leaves the state of ev{} having been applied once.
	handledOnce := func(h *harness) { seedHandled(h, ev{}.msg()) }
	tests := []handleCase{
		// Creating.
		{
			name: "new lead is created, recorded as pending before it is sent",
			setup: func(t *testing.T, h *harness) {
				h.crm.createHook = func(_ context.Context, c domain.Contact) (ports.Created, error) {
					if _, p, _ := h.people.Person("intercom", ada); p == nil || *p != *pending("evt-1", now) {
						t.Errorf("pending create in the person record when Create was sent: got %+v, want evt-1 at %v", p, now)
					}
					return h.crm.create(c)
				}
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				c := h.crm.RawCalls()[1].Contact
				want := domain.Contact{Role: domain.RoleLead, Email: ada, Name: "Ada",
					Custom: map[string]any{"referral_link": "https://refer.example.com/ADA-7Q2"}, Marker: "evt-1"}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("created contact: got %+v, want %+v", c, want)
				}
				equalList(t, "people calls", h.people.Calls(), []string{
					"lock " + adaKey, "save " + adaKey + " pending=evt-1", "unlock " + adaKey + " contact=c1"})
			},
		},
		{
			name:          "new user is created and found by external id",
			msg:           ev{Campaign: "camp_user"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find xid:usr_8812", "create user ada@example.com"},
			wantOutcomes:  []string{"camp_user|create_user|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				equalList(t, "contacts", h.crm.Contacts(), []string{"c1 user ada@example.com xid=usr_8812 marker=evt-1"})
			},
		},
		{
			name:          "binary mode",
			msg:           ev{}.binary(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
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
			wantLedger:    "intercom/evt-1: done skipped l1",
			wantPeople:    "intercom/ada@example.com: contact=l1",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				// Nothing is pending when nothing is created.
				equalList(t, "people calls", h.people.Calls(), []string{"lock " + adaKey, "unlock " + adaKey + " contact=l1"})
			},
		},
		{
			name:          "existing contact with policy update is updated without a role or marker",
			setup:         func(t *testing.T, h *harness) { h.crm.seed(domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada}) },
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "l1"},
			wantCRM:       []string{"find email:ada@example.com", "update l1"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "intercom/evt-1: done updated l1",
			wantPeople:    "intercom/ada@example.com: contact=l1",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
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
			wantLedger:    "intercom/evt-1: done updated u1",
			wantPeople:    "intercom/ada@example.com: contact=u1",
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
			wantLedger:    "intercom/evt-1: done updated l9",
			wantPeople:    "intercom/ada@example.com: contact=l9",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "create answered existing (409) with policy skip is skipped",
			setup:         func(t *testing.T, h *harness) { h.crm.createHook = conflict(h, "c409") },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c409"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "intercom/evt-1: done skipped c409",
			wantPeople:    "intercom/ada@example.com: contact=c409",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "create answered existing (409) with policy update is updated",
			setup:         func(t *testing.T, h *harness) { h.crm.createHook = conflict(h, "c409") },
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c409"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com", "update c409"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "intercom/evt-1: done updated c409",
			wantPeople:    "intercom/ada@example.com: contact=c409",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name: "known person with policy update: no search",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "c7", nil)
				h.crm.seed(domain.Match{ID: "c7", Role: domain.RoleLead, Email: ada})
			},
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c7"},
			wantCRM:       []string{"update c7"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "intercom/evt-1: done updated c7",
			wantPeople:    "intercom/ada@example.com: contact=c7",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "known person with policy skip: no CRM call at all",
			setup:         func(t *testing.T, h *harness) { h.people.seed("intercom", ada, "c7", nil) },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "intercom/evt-1: done skipped c7",
			wantPeople:    "intercom/ada@example.com: contact=c7",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "person known on another connection only is searched",
			setup:         func(t *testing.T, h *harness) { h.people.seed("intercom_eu", ada, "eu7", nil) },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    "intercom/ada@example.com: contact=c1; intercom_eu/ada@example.com: contact=eu7",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:        "contact gone: forgotten on unlock and retried",
			setup:       func(t *testing.T, h *harness) { h.people.seed("intercom", ada, "c7", nil) },
			msg:         ev{Campaign: "camp_update"}.msg(),
			want:        app.Verdict{Retry: true, Reason: "contact_gone"},
			wantCRM:     []string{"update c7"},
			wantRetries: []string{"camp_update|contact_gone"},
			wantLedger:  firstFailed,
			wantPeople:  adaEmpty,
			check: func(t *testing.T, h *harness) {
				equalList(t, "people calls", h.people.Calls(), []string{"lock " + adaKey, "unlock " + adaKey + " empty"})
			},
		},
		{
			name:          "a person record without a contact or a pending create is searched",
			setup:         func(t *testing.T, h *harness) { h.people.seed("intercom", ada, "", nil) },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
		},

		// Creates whose outcome is unknown.
		{
			name:        "an uncertain create failure keeps the create pending",
			setup:       func(t *testing.T, h *harness) { h.crm.failCreates(createLostBefore) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  firstFailed,
			wantPeople:  "intercom/ada@example.com: pending=evt-1",
		},
		{
			name:        "an uncertain create failure after the create was applied keeps it pending",
			setup:       func(t *testing.T, h *harness) { h.crm.failCreates(createLostAfter) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  firstFailed,
			wantPeople:  "intercom/ada@example.com: pending=evt-1",
			check: func(t *testing.T, h *harness) {
				equalList(t, "contacts", h.crm.Contacts(), []string{"c1 lead ada@example.com marker=evt-1"})
			},
		},
		{
			name: "a pending create of another event found by its marker is recorded for that event; this event is skipped",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-time.Minute)))
				h.crm.seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: "ada.old@example.com", Marker: "evt-0"})
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"},
			wantCRM:       []string{"find email:ada@example.com marker:evt-0"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "intercom/evt-0: done created c9; intercom/evt-1: done skipped c9",
			wantPeople:    "intercom/ada@example.com: contact=c9",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				if got := h.logs.Matching("resolved a create whose outcome was unknown"); len(got) != 1 || got[0].Attrs["pending_event_id"] != "evt-0" {
					t.Errorf("resolution logs: got %+v, want one naming evt-0", got)
				}
			},
		},
		{
			name: "a pending create of another event found by its marker is recorded for that event; this event updates it",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-time.Minute)))
				h.crm.seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, Marker: "evt-0"})
			},
			msg:           ev{Campaign: "camp_update"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c9"},
			wantCRM:       []string{"find email:ada@example.com marker:evt-0", "update c9"},
			wantOutcomes:  []string{"camp_update|create_lead|updated|"},
			wantLedger:    "intercom/evt-0: done created c9; intercom/evt-1: done updated c9",
			wantPeople:    "intercom/ada@example.com: contact=c9",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name: "an unmarked contact makes a pending create moot: this event's policy applies and nobody is credited",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-time.Minute)))
				h.crm.seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada})
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"},
			wantCRM:       []string{"find email:ada@example.com marker:evt-0"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "intercom/evt-1: done skipped c9",
			wantPeople:    "intercom/ada@example.com: contact=c9",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name: "the marked contact wins over an older match by email",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-time.Minute)))
				h.crm.seed(
					domain.Match{ID: "u1", Role: domain.RoleUser, Email: ada, CreatedAt: 1},
					domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, CreatedAt: 9, Marker: "evt-0"},
				)
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"},
			wantCRM:       []string{"find email:ada@example.com marker:evt-0"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "intercom/evt-0: done created c9; intercom/evt-1: done skipped c9",
			wantPeople:    "intercom/ada@example.com: contact=c9",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name: "a pending lead create of another event that search may not show yet: wait, create nothing",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-time.Minute)))
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "awaiting_search"},
			delay:       awaitingSearch(app.DefaultSearchLag - time.Minute),
			wantCRM:     []string{"find email:ada@example.com marker:evt-0"},
			wantRetries: []string{"camp_lead|awaiting_search"},
			wantPeople:  "intercom/ada@example.com: pending=evt-0",
			wantLedger:  "", // a wait is not a failure
		},
		{
			name: "a pending lead create of another event not found after the search lag: this event creates",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-app.DefaultSearchLag)))
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com marker:evt-0", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				equalList(t, "contacts", h.crm.Contacts(), []string{"c1 lead ada@example.com marker=evt-1"})
			},
		},
		{
			name: "a pending create with an external id that the CRM does not have is proven absent: this event creates at once",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", &ports.PendingCreate{EventID: "evt-0", At: now, ExternalID: "usr_0"})
			},
			msg:           ev{Campaign: "camp_user_email"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find xid:usr_0 marker:evt-0", "create user ada@example.com"},
			wantOutcomes:  []string{"camp_user_email|create_user|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
		},

		{
			name:        "a pending create without an external id holds back a user event until the search lag passes",
			setup:       func(t *testing.T, h *harness) { h.people.seed("intercom", ada, "", pending("evt-0", now)) },
			msg:         ev{Campaign: "camp_user_email"}.msg(),
			want:        app.Verdict{Retry: true, Reason: "awaiting_search"},
			delay:       awaitingSearch(app.DefaultSearchLag),
			wantCRM:     []string{"find email:ada@example.com marker:evt-0"},
			wantRetries: []string{"camp_user_email|awaiting_search"},
			wantPeople:  "intercom/ada@example.com: pending=evt-0",
		},

		// CRM failures.
		{
			name:        "a certain create failure is retried and clears the pending create",
			setup:       func(t *testing.T, h *harness) { h.crm.createHook = failCreate(crmErr(ports.Transient)) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  firstFailed,
			wantPeople:  adaEmpty,
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
			wantLedger:  firstFailed,
			wantPeople:  adaEmpty,
		},
		{
			name:        "an unclassified error is retried as transient",
			setup:       func(t *testing.T, h *harness) { h.crm.findHook = failFind(errors.New("connection reset")) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  firstFailed,
			wantPeople:  adaEmpty,
		},
		{
			name: "unauthorized before the last failed attempt is retried",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts-2, now.Add(-time.Minute)))
				h.crm.findHook = failFind(crmErr(ports.Unauthorized))
			},
			msg:         ev{}.at(maxAttempts - 1),
			want:        app.Verdict{Retry: true, Reason: "unauthorized"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|unauthorized"},
			wantLedger:  "intercom/evt-1: failures=2 first=09:59:05",
			wantPeople:  adaEmpty,
		},
		{
			name:         "permanent error on create is dead-lettered as crm_rejected and the record cleared",
			setup:        func(t *testing.T, h *harness) { h.crm.createHook = failCreate(crmErr(ports.Permanent)) },
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected},
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantPeople:   adaEmpty,
			check: func(t *testing.T, h *harness) {
				equalList(t, "ledger calls", h.ledger.Calls(""), []string{"event " + evt1Key, "event " + evt1Key, "clear " + evt1Key})
			},
		},
		{
			name: "permanent error on update is dead-lettered as crm_rejected",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "c7", nil)
				h.crm.updateHook = func(context.Context, string, domain.Contact) error { return crmErr(ports.Permanent) }
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected},
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantPeople:   "intercom/ada@example.com: contact=c7",
		},
		{
			name: "transient error at the last failed attempt is dead-lettered as attempts_exhausted",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts-1, now.Add(-time.Minute)))
				h.crm.createHook = failCreate(crmErr(ports.Transient))
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantPeople:   adaEmpty,
			wantLedger:   "", // cleared: a replay starts afresh
		},
		{
			name: "transient error after more failures than allowed is dead-lettered",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts+2, now.Add(-time.Minute)))
				h.crm.findHook = failFind(crmErr(ports.RateLimited))
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantPeople:   adaEmpty,
			wantLedger:   "", // cleared: a replay starts afresh
		},
		{
			name:        "the first failure is retried one delivery before the backstop",
			setup:       func(t *testing.T, h *harness) { h.crm.findHook = failFind(crmErr(ports.Transient)) },
			msg:         ev{}.at(backstop - 1),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  firstFailed,
			wantPeople:  adaEmpty,
		},
		{
			name:         "the first failure at the delivery backstop is dead-lettered",
			setup:        func(t *testing.T, h *harness) { h.crm.findHook = failFind(crmErr(ports.Transient)) },
			msg:          ev{}.at(backstop),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantPeople:   adaEmpty,
			wantLedger:   "", // cleared: a replay starts afresh
		},
		{
			name: "unauthorized at the last failed attempt is dead-lettered as unauthorized",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts-1, now.Add(-time.Minute)))
				h.crm.findHook = failFind(crmErr(ports.Unauthorized))
			},
			msg:          ev{}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonUnauthorized},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|unauthorized"},
			wantDead:     []string{app.ReasonUnauthorized},
			wantPeople:   adaEmpty,
			wantLedger:   "", // cleared: a replay starts afresh
		},
		{
			name: "contact gone at the last failed attempt is dead-lettered as attempts_exhausted",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts-1, now.Add(-time.Minute)))
				h.people.seed("intercom", ada, "c7", nil)
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantPeople:   adaEmpty,
			wantLedger:   "", // cleared: a replay starts afresh
		},

		// The ledger and the person's lock.
		{
			name:         "an already applied event is a duplicate without any CRM call or person lock",
			setup:        func(t *testing.T, h *harness) { handledOnce(h) },
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate|"},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			check: func(t *testing.T, h *harness) {
				wantNoPeopleLocks(t, h)
				equalList(t, "ledger calls", h.ledger.Calls(""), []string{"event " + evt1Key})
			},
		},
		{
			name: "an already applied event is a duplicate even while another worker holds the person",
			setup: func(t *testing.T, h *harness) {
				handledOnce(h)
				h.people.hold("intercom", ada)
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate|"},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated + " locked",
			check:        func(t *testing.T, h *harness) { wantNoPeopleLocks(t, h) },
		},
		{
			name:         "the same id with another body is a duplicate: the id is the key",
			setup:        func(t *testing.T, h *harness) { handledOnce(h) },
			msg:          ev{Email: bob}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate|"},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			check:        func(t *testing.T, h *harness) { wantNoPeopleLocks(t, h) },
		},
		{
			name:          "another id for the same person is not a duplicate",
			setup:         func(t *testing.T, h *harness) { handledOnce(h) },
			msg:           ev{ID: "evt-2"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"},
			wantOutcomes:  []string{"camp_lead|create_lead|skipped|"},
			wantLedger:    "intercom/evt-1: done created c1; intercom/evt-2: done skipped c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name: "the same event id on another connection is another event",
			setup: func(t *testing.T, h *harness) {
				seedHandled(h, ev{Campaign: "camp_eu"}.msg())
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1; intercom_eu/evt-1: done created c1",
			wantPeople:    "intercom/ada@example.com: contact=c1; intercom_eu/ada@example.com: contact=c1",
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:        "a person locked by another worker is retried soon, without any CRM call or counted failure",
			setup:       func(t *testing.T, h *harness) { h.people.hold("intercom", ada) },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "person_busy"},
			delay:       personBusy,
			wantRetries: []string{"camp_lead|person_busy"},
			wantPeople:  adaEmpty + " locked",
			check: func(t *testing.T, h *harness) {
				equalList(t, "ledger calls", h.ledger.Calls(""), []string{"event " + evt1Key})
			},
		},
		{
			name: "a lock whose lease ended is taken over",
			setup: func(t *testing.T, h *harness) {
				h.people.hold("intercom", ada)
				h.clock.Advance(lease)
			},
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second}, // age at receipt, not at the end
		},
		{
			name: "an event finished by another worker before the lock was taken is a duplicate",
			setup: func(t *testing.T, h *harness) {
				h.people.onLock = func(string) {
					h.ledger.seed(evt1Key, ports.EventRecord{Done: &ports.Record{Outcome: domain.OutcomeCreated, ContactID: "c5", At: now}})
				}
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c5"},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate|"},
			wantLedger:   "intercom/evt-1: done created c5",
			wantPeople:   adaEmpty,
		},
		{
			name:        "a ledger read failure is retried without locking the person",
			setup:       func(t *testing.T, h *harness) { h.ledger.eventErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantRetries: []string{"camp_lead|ledger"},
			check:       func(t *testing.T, h *harness) { wantNoPeopleLocks(t, h) },
		},
		{
			name:        "a person lock failure is retried without any CRM call or counted failure",
			setup:       func(t *testing.T, h *harness) { h.people.lockErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantRetries: []string{"camp_lead|ledger"},
		},
		{
			name:        "a failure to record the pending create is retried without a create",
			setup:       func(t *testing.T, h *harness) { h.people.saveErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
			wantLedger:  firstFailed,
			wantPeople:  adaEmpty,
		},
		{
			name: "a lock lost before the pending create is recorded is retried without a create",
			setup: func(t *testing.T, h *harness) {
				// While this worker searches, its lease ends and another
				// worker takes the person over.
				h.crm.findHook = func(context.Context, domain.Identity) ([]domain.Match, error) {
					h.clock.Advance(lease)
					h.people.hold("intercom", ada)
					return nil, nil
				}
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
			wantLedger:  "intercom/evt-1: failures=1 first=10:02:05",
			wantPeople:  adaEmpty + " locked", // by the other worker, untouched
			check: func(t *testing.T, h *harness) {
				if v := h.lastVerdict; !errors.Is(v.Err, ports.ErrClaimLost) {
					t.Errorf("verdict error: got %v, want ErrClaimLost", v.Err)
				}
				if got := h.logs.Matching("unlocking the person failed"); len(got) != 1 {
					t.Errorf("unlock failure logs: got %d, want 1", len(got))
				}
			},
		},
		{
			name: "a failure to count a failed attempt still retries",
			setup: func(t *testing.T, h *harness) {
				h.crm.createHook = failCreate(crmErr(ports.Transient))
				h.ledger.failedErr = errors.New("kv unavailable")
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "transient"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantPeople:  adaEmpty,
			check: func(t *testing.T, h *harness) {
				if got := h.logs.Matching("recording a failed attempt failed"); len(got) != 1 {
					t.Errorf("logs: got %d, want 1", len(got))
				}
			},
		},
		{
			name:        "a failure to record the result is retried, not counted, and the person keeps the contact",
			setup:       func(t *testing.T, h *harness) { h.ledger.doneErr = errors.New("kv unavailable") },
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "ledger"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
			wantPeople:  adaCreated,
		},
		{
			name:          "a failure to unlock the person does not change the verdict; the pending create stays for the next holder",
			setup:         func(t *testing.T, h *harness) { h.people.unlockErr = errors.New("kv unavailable") },
			msg:           ev{}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"},
			wantCRM:       []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes:  []string{"camp_lead|create_lead|created|"},
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    "intercom/ada@example.com: pending=evt-1 locked",
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				if got := h.logs.Matching("unlocking the person failed"); len(got) != 1 {
					t.Errorf("logs: got %d, want 1", len(got))
				}
			},
		},
		{
			name: "a failure to clear a dead-lettered event's record still dead-letters",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(1, now.Add(-time.Minute)))
				h.ledger.clearErr = errors.New("kv unavailable")
				h.crm.createHook = failCreate(crmErr(ports.Permanent))
			},
			msg:          ev{}.at(2),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected},
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantLedger:   "intercom/evt-1: failures=1 first=09:59:05",
			wantPeople:   adaEmpty,
			check: func(t *testing.T, h *harness) {
				if got := h.logs.Matching("clearing the event's failures failed"); len(got) != 1 {
					t.Errorf("logs: got %d, want 1", len(got))
				}
			},
		},

		{
			name: "a failure to clear the record of an event whose attempts are exhausted still dead-letters",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts-1, now.Add(-time.Minute)))
				h.ledger.clearErr = errors.New("kv unavailable")
				h.crm.findHook = failFind(crmErr(ports.Transient))
			},
			msg:          ev{}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   "intercom/evt-1: failures=3 first=09:59:05",
			wantPeople:   adaEmpty,
			check: func(t *testing.T, h *harness) {
				if got := h.logs.Matching("clearing the event's failures failed"); len(got) != 1 {
					t.Errorf("logs: got %d, want 1", len(got))
				}
			},
		},

		// Campaign settings.
		{
			name:          "unknown campaign without a default is unconfigured",
			msg:           ev{Campaign: "camp_new"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeUnconfigured},
			wantOutcomes:  []string{"_unconfigured||unconfigured|"},
			wantProcessed: []time.Duration{5 * time.Second},
			check:         func(t *testing.T, h *harness) { wantNoPeopleLocks(t, h) },
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
			wantLedger:    "intercom/evt-1: done created c1",
			wantPeople:    adaCreated,
			wantProcessed: []time.Duration{5 * time.Second},
		},
		{
			name:          "action nothing settles without the ledger or the CRM",
			msg:           ev{Campaign: "camp_nothing"}.msg(),
			want:          app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes:  []string{"camp_nothing|nothing|nothing|"},
			wantProcessed: []time.Duration{5 * time.Second},
			check: func(t *testing.T, h *harness) {
				wantNoPeopleLocks(t, h)
				equalList(t, "ledger calls", h.ledger.Calls(""), nil)
			},
		},
		{
			name: "a connection without a CRM is retried without counting a failure",
			setup: func(t *testing.T, h *harness) {
				c := testCatalog()
				c.Campaigns["camp_hub"] = domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
				h.svc.SetCatalog(c)
			},
			msg:         ev{Campaign: "camp_hub"}.at(maxAttempts),
			want:        app.Verdict{Retry: true, Reason: "no_crm"},
			wantRetries: []string{"camp_hub|no_crm"},
		},
		{
			name: "a connection without a CRM is dead-lettered at the delivery backstop",
			setup: func(t *testing.T, h *harness) {
				c := testCatalog()
				c.Campaigns["camp_hub"] = domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
				h.svc.SetCatalog(c)
			},
			msg:          ev{Campaign: "camp_hub"}.at(backstop),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
			wantOutcomes: []string{"camp_hub|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
		},

		// Invalid events.
		invalidCase("malformed JSON", []byte(`{"specversion":"1.0",`), domain.ReasonMalformed, "", ""),
		invalidCase("wrong type", []byte(strings.Replace(string(ev{}.body()), `"type":"referrer.joined"`, `"type":"referrer.left"`, 1)), domain.ReasonWrongType, "", ""),
		invalidCase("missing id", ev{ID: "  "}.body(), domain.ReasonMissingID, "", ""),
		invalidCase("missing email", ev{Email: " "}.body(), domain.ReasonMissingEmail, "evt-1", "camp_lead"),
		invalidCase("invalid email", ev{Email: "ada(at)example.com"}.body(), domain.ReasonInvalidEmail, "evt-1", "camp_lead"),
		invalidCase("oversized", append(ev{}.body(), strings.Repeat(" ", domain.MaxEventSize)...), domain.ReasonTooLarge, "", ""),
		invalidCase("missing campaign", ev{Campaign: " "}.body(), domain.ReasonMissingCampaign, "evt-1", ""),
		{
			name:         "mapping error is dead-lettered under its campaign",
			msg:          ev{Campaign: "camp_badmap", Meta: map[string]any{"opt_out": "maybe"}}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: domain.ReasonMapping},
			wantOutcomes: []string{"camp_badmap|create_lead|dead_lettered|mapping"},
			wantDead:     []string{domain.ReasonMapping},
			check:        func(t *testing.T, h *harness) { wantNoPeopleLocks(t, h) },
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
			wantPeople:  adaEmpty,
		},
		{
			name: "dead-letter publish failure at the last failed attempt is retried, not counted",
			setup: func(t *testing.T, h *harness) {
				h.ledger.seed(evt1Key, failures(maxAttempts-1, now.Add(-time.Minute)))
				h.crm.createHook = failCreate(crmErr(ports.Transient))
				h.dlq.err = errors.New("stream unavailable")
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Reason: "dead_letter_failed"},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|dead_letter_failed"},
			wantPeople:  adaEmpty,
			// Not dead-lettered, so not cleared: the redelivery gives up
			// again at once.
			wantLedger: "intercom/evt-1: failures=3 first=09:59:05",
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
			h.lastVerdict = got

			checkVerdictIn(t, got, tt.want, tt.delay)
			checkCounted(t, h, got)
			checkIdentified(t, got, tt.msg)
			equalList(t, "CRM calls", h.crm.Calls(""), tt.wantCRM)
			equalList(t, "other connection's CRM calls", h.crmEU.Calls(""), nil)
			equalList(t, "outcomes", h.metrics.Outcomes(), tt.wantOutcomes)
			equalList(t, "retries", h.metrics.Retries(), tt.wantRetries)
			equalList(t, "dead letters", h.dlq.Reasons(), tt.wantDead)
			equalList(t, "event ages", h.metrics.Durations(), tt.wantProcessed)
			if got := h.ledger.State(); got != tt.wantLedger {
				t.Errorf("ledger: got %q, want %q", got, tt.wantLedger)
			}
			if got := h.people.State(); got != tt.wantPeople {
				t.Errorf("people: got %q, want %q", got, tt.wantPeople)
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}

// invalidCase is a TestHandle case for an event that can never be
// processed: dead-lettered under the unknown label, naming the event id and
// campaign when they were readable, nothing else touched.
func invalidCase(name string, body []byte, reason, eventID, campaign string) handleCase {
	return handleCase{
		name:         "invalid event: " + name,
		msg:          delivery(body, 1),
		want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: reason},
		wantOutcomes: []string{"_unknown||dead_lettered|" + reason},
		wantDead:     []string{reason},
		check: func(t *testing.T, h *harness) {
			wantNoPeopleLocks(t, h)
			equalList(t, "ledger calls", h.ledger.Calls(""), nil)
			if v := h.lastVerdict; v.EventID != eventID || v.Campaign != campaign {
				t.Errorf("verdict identity: got event %q campaign %q, want %q, %q", v.EventID, v.Campaign, eventID, campaign)
			}
			if d := h.dlq.Letters(); len(d) != 1 || d[0].EventID != eventID || d[0].Campaign != campaign {
				t.Errorf("dead letter identity: got %+v, want one for event %q campaign %q", d, eventID, campaign)
			}
		},
	}
}

// step is one delivery of a TestRedeliveries scenario.
type step struct {
	before  func(t *testing.T, h *harness) // e.g. move the clock
	replica int                            // 0: h.svc; n: the scenario's nth other replica
	msg     app.Message
	want    app.Verdict
	delay   delayRange
	wantCRM []string // this step's calls on "intercom"
	check   func(t *testing.T, h *harness)
}

// scenario is a sequence of deliveries against one harness, and the state
// they must leave behind.
type scenario struct {
	name     string
	replicas int // other replicas besides h.svc
	setup    func(t *testing.T, h *harness)
	steps    []step

	wantContacts []string // fakeCRM.Contacts on "intercom"
	wantLedger   string
	wantPeople   string
	wantOutcomes []string
	wantDead     []string
}

func TestRedeliveries(t *testing.T) {
	lostAfter := func(t *testing.T, h *harness) { h.crm.failCreates(createLostAfter) }
	lostBefore := func(t *testing.T, h *harness) { h.crm.failCreates(createLostBefore) }
	advance := func(d time.Duration) func(*testing.T, *harness) {
		return func(_ *testing.T, h *harness) { h.clock.Advance(d) }
	}
	findFails := func(t *testing.T, h *harness) { h.crm.findHook = failFind(crmErr(ports.Transient)) }
	findWorks := func(t *testing.T, h *harness) { h.crm.findHook = nil }
	ledgerIs := func(want string) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) {
			t.Helper()
			if got := h.ledger.State(); got != want {
				t.Errorf("ledger: got %q, want %q", got, want)
			}
		}
	}
	peopleIs := func(want string) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) {
			t.Helper()
			if got := h.people.State(); got != want {
				t.Errorf("people: got %q, want %q", got, want)
			}
		}
	}
	both := func(checks ...func(*testing.T, *harness)) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) {
			t.Helper()
			for _, c := range checks {
				c(t, h)
			}
		}
	}
	transient := app.Verdict{Retry: true, Reason: "transient"}
	created := app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"}
	awaiting := app.Verdict{Retry: true, Reason: "awaiting_search"}
	busy := app.Verdict{Retry: true, Reason: "person_busy"}
	const (
		findAda       = "find email:ada@example.com"
		findAdaMarked = "find email:ada@example.com marker:evt-1"
		findEvt0      = "find email:ada@example.com marker:evt-0"
		createLead    = "create lead ada@example.com"
		createUser    = "create user ada@example.com"
		leadC1        = "c1 lead ada@example.com marker=evt-1"
	)
	tests := []scenario{
		{
			name:  "a create whose response was lost is settled by its own redelivery as created",
			setup: lostAfter,
			steps: []step{
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda, createLead},
					check: both(ledgerIs(firstFailed), peopleIs("intercom/ada@example.com: pending=evt-1"))},
				{msg: ev{}.at(2), want: created, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|created|"},
		},
		{
			name: "a lead whose create may have been applied waits out the search lag, then is found by its marker",
			setup: func(t *testing.T, h *harness) {
				h.crm.setSearchLag(2 * time.Minute)
				h.crm.failCreates(createLostAfter)
			},
			steps: []step{
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda, createLead}},
				{before: advance(time.Minute), msg: ev{}.at(2), want: awaiting, delay: awaitingSearch(app.DefaultSearchLag - time.Minute),
					wantCRM: []string{findAdaMarked}, check: peopleIs("intercom/ada@example.com: pending=evt-1")},
				{before: advance(time.Minute), msg: ev{}.at(3), want: created, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|created|"},
		},
		{
			name:  "a lead whose create was not applied is created once the search lag has passed",
			setup: lostBefore,
			steps: []step{
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda, createLead}},
				{before: advance(app.DefaultSearchLag - time.Millisecond), msg: ev{}.at(2), want: awaiting,
					delay: awaitingSearch(time.Millisecond), wantCRM: []string{findAdaMarked}},
				{before: advance(time.Millisecond), msg: ev{}.at(3), want: created, wantCRM: []string{findAdaMarked, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|created|"},
		},
		{
			name: "a user known by email only whose create may have been applied waits for search, then finds its own create",
			setup: func(t *testing.T, h *harness) {
				h.crm.setSearchLag(2 * time.Minute) // the user is not searchable by email yet
				h.crm.failCreates(createLostAfter)
			},
			steps: []step{
				{msg: ev{Campaign: "camp_user_email"}.msg(), want: transient, wantCRM: []string{findAda, createUser}},
				{msg: ev{Campaign: "camp_user_email"}.at(2), want: awaiting, delay: awaitingSearch(app.DefaultSearchLag),
					wantCRM: []string{findAdaMarked}},
				{before: advance(2 * time.Minute), msg: ev{Campaign: "camp_user_email"}.at(3), want: created, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{"c1 user ada@example.com marker=evt-1"},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_user_email|create_user|created|"},
		},
		{
			name: "a user with an external id whose create was applied is found by it at once, even while search lags",
			setup: func(t *testing.T, h *harness) {
				h.crm.setSearchLag(2 * time.Minute)
				h.crm.failCreates(createLostAfter)
			},
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: transient, wantCRM: []string{"find xid:usr_8812", createUser}},
				{msg: ev{Campaign: "camp_user"}.at(2), want: created, wantCRM: []string{"find xid:usr_8812 marker:evt-1"}},
			},
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-1"},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_user|create_user|created|"},
		},
		{
			name: "a pending create survives this event's failure to record its own when it is not proven absent",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-app.DefaultSearchLag)))
				h.people.saveErr = errors.New("kv unavailable")
			},
			steps: []step{
				{msg: ev{ID: "evt-2", Campaign: "camp_user_email"}.msg(), want: app.Verdict{Retry: true, Reason: "ledger"},
					wantCRM: []string{findEvt0}},
			},
			wantLedger: "intercom/evt-2: failures=1 first=10:00:05",
			wantPeople: "intercom/ada@example.com: empty",
		},
		{
			name:  "a user with an external id whose create was not applied is created again at once",
			setup: lostBefore,
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: transient, wantCRM: []string{"find xid:usr_8812", createUser}},
				{msg: ev{Campaign: "camp_user"}.at(2), want: created, wantCRM: []string{"find xid:usr_8812 marker:evt-1", createUser}},
			},
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-1"},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_user|create_user|created|"},
		},
		{
			name:  "another event settles a lost create for the event that sent it, whose redelivery is a duplicate",
			setup: lostAfter,
			steps: []step{
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda, createLead}},
				{msg: ev{ID: "evt-2", Campaign: "camp_update"}.msg(), want: app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
					wantCRM: []string{findAdaMarked, "update c1"}},
				{msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"},
					check: func(t *testing.T, h *harness) { wantNoPeopleLocks(t, h) }},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1; intercom/evt-2: done updated c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_update|create_lead|updated|", "camp_lead|create_lead|duplicate|"},
		},
		{
			name:  "another event creates a user whose earlier create was proven not applied; the earlier event then updates it",
			setup: lostBefore,
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: transient, wantCRM: []string{"find xid:usr_8812", createUser}},
				{msg: ev{ID: "evt-2", Campaign: "camp_user"}.msg(), want: created,
					wantCRM: []string{"find xid:usr_8812 marker:evt-1", createUser}},
				{msg: ev{Campaign: "camp_user"}.at(2), want: app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
					wantCRM: []string{"update c1"}},
			},
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-2"},
			wantLedger:   "intercom/evt-1: done updated c1; intercom/evt-2: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_user|create_user|created|", "camp_user|create_user|updated|"},
		},
		{
			name:     "failures are counted in the ledger across deliveries and replicas, and dead-lettered at MaxAttempts",
			replicas: 1,
			setup:    findFails,
			steps: []step{
				// Every delivery is a first delivery (a republish, say):
				// only the ledger knows how often the event failed.
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda}, check: ledgerIs(firstFailed)},
				{before: advance(time.Minute), replica: 1, msg: ev{}.msg(), want: transient, wantCRM: []string{findAda},
					check: ledgerIs("intercom/evt-1: failures=2 first=10:00:05")},
				{before: advance(time.Minute), msg: ev{}.msg(),
					want:    app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
					wantCRM: []string{findAda},
					check: func(t *testing.T, h *harness) {
						letters := h.dlq.Letters()
						if len(letters) != 1 {
							t.Fatalf("dead letters: got %d, want 1", len(letters))
						}
						d := letters[0]
						if !d.FirstSeen.Equal(now) || !d.Failed.Equal(now.Add(2*time.Minute)) || d.Attempts != 1 || d.EventID != "evt-1" {
							t.Errorf("dead letter: got FirstSeen %v Failed %v Attempts %d EventID %q, want %v, %v, 1, evt-1",
								d.FirstSeen, d.Failed, d.Attempts, d.EventID, now, now.Add(2*time.Minute))
						}
						if want := "gave up after 3 failed attempts (1 deliveries)"; !strings.Contains(d.Message, want) {
							t.Errorf("dead letter message: got %q, want it to contain %q", d.Message, want)
						}
					}},
			},
			wantPeople:   adaEmpty,
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   "", // cleared: a replay starts afresh
		},
		{
			name: "waiting for a busy person is not a failure",
			setup: func(t *testing.T, h *harness) {
				h.people.hold("intercom", ada)
			},
			steps: []step{
				{msg: ev{}.at(1), want: busy, delay: personBusy, check: ledgerIs("")},
				{msg: ev{}.at(2), want: busy, delay: personBusy, check: ledgerIs("")},
				{msg: ev{}.at(3), want: busy, delay: personBusy, check: ledgerIs("")},
				{msg: ev{}.at(4), want: busy, delay: personBusy, check: ledgerIs("")},
				{before: func(t *testing.T, h *harness) { h.people.release("intercom", ada) },
					msg: ev{}.at(5), want: created, wantCRM: []string{findAda, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|created|"},
		},
		{
			name: "waiting for search is not a failure",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now))
			},
			steps: []step{
				{msg: ev{}.at(1), want: awaiting, delay: awaitingSearch(5 * time.Minute), wantCRM: []string{findEvt0}, check: ledgerIs("")},
				{before: advance(time.Minute), msg: ev{}.at(2), want: awaiting, delay: awaitingSearch(4 * time.Minute), wantCRM: []string{findEvt0}, check: ledgerIs("")},
				{before: advance(time.Minute), msg: ev{}.at(3), want: awaiting, delay: awaitingSearch(3 * time.Minute), wantCRM: []string{findEvt0}, check: ledgerIs("")},
				{before: advance(time.Minute), msg: ev{}.at(4), want: awaiting, delay: awaitingSearch(2 * time.Minute), wantCRM: []string{findEvt0}, check: ledgerIs("")},
				{before: advance(2 * time.Minute), msg: ev{}.at(5), want: created, wantCRM: []string{findEvt0, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|created|"},
		},
		{
			name:  "a record dead-lettered as crm_rejected is cleared: a replay starts afresh",
			setup: findFails,
			steps: []step{
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda}, check: ledgerIs(firstFailed)},
				{before: func(t *testing.T, h *harness) {
					h.clock.Advance(time.Minute)
					findWorks(t, h)
					h.crm.createHook = failCreate(crmErr(ports.Permanent))
				}, msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected},
					wantCRM: []string{findAda, createLead},
					check: func(t *testing.T, h *harness) {
						ledgerIs("")(t, h)
						if d := h.dlq.Letters(); len(d) != 1 || !d[0].FirstSeen.Equal(now) {
							t.Errorf("dead letters: got %+v, want one first seen at %v", d, now)
						}
					}},
				// The operator's replay, while the CRM still fails once.
				{before: func(t *testing.T, h *harness) {
					h.crm.createHook = nil
					findFails(t, h)
				}, msg: ev{}.msg(), want: transient, wantCRM: []string{findAda}, check: ledgerIs("intercom/evt-1: failures=1 first=10:01:05")},
				{before: findWorks, msg: ev{}.at(2), want: created, wantCRM: []string{findAda, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|crm_rejected", "camp_lead|create_lead|created|"},
			wantDead:     []string{app.ReasonCRMRejected},
		},
		{
			name:  "a record dead-lettered as attempts_exhausted is cleared",
			setup: findFails,
			steps: []step{
				{msg: ev{}.at(1), want: transient, wantCRM: []string{findAda}},
				{msg: ev{}.at(2), want: transient, wantCRM: []string{findAda}},
				{msg: ev{}.at(3), want: app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted},
					wantCRM: []string{findAda}, check: ledgerIs("")},
				// The operator's replay, while the CRM still fails once:
				// a fresh start, not a fourth failure.
				{msg: ev{}.msg(), want: transient, wantCRM: []string{findAda}, check: ledgerIs(firstFailed)},
				{before: findWorks, msg: ev{}.at(2), want: created, wantCRM: []string{findAda, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted", "camp_lead|create_lead|created|"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
		},
		{
			name:  "a result that could not be recorded is not created again: the person keeps the contact",
			setup: func(t *testing.T, h *harness) { h.ledger.doneErr = errors.New("kv unavailable") },
			steps: []step{
				{msg: ev{}.msg(), want: app.Verdict{Retry: true, Reason: "ledger"}, wantCRM: []string{findAda, createLead},
					check: both(ledgerIs(""), peopleIs(adaCreated))},
				// The creating event's redelivery finds that it created the
				// person's contact: created, with no CRM call.
				{before: func(t *testing.T, h *harness) { h.ledger.setErrs(nil, nil, nil, nil) },
					msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_lead|create_lead|created|"},
		},
		{
			name:  "a contact gone from the CRM is searched afresh by the redelivery",
			setup: func(t *testing.T, h *harness) { h.people.seed("intercom", ada, "c7", nil) },
			steps: []step{
				{msg: ev{Campaign: "camp_update"}.msg(), want: app.Verdict{Retry: true, Reason: "contact_gone"},
					wantCRM: []string{"update c7"}, check: peopleIs(adaEmpty)},
				{msg: ev{Campaign: "camp_update"}.at(2), want: created, wantCRM: []string{findAda, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   "intercom/evt-1: done created c1",
			wantPeople:   adaCreated,
			wantOutcomes: []string{"camp_update|create_lead|created|"},
		},
		{
			name: "a pending create of another event that cannot be recorded stays pending for the next handler",
			setup: func(t *testing.T, h *harness) {
				h.people.seed("intercom", ada, "", pending("evt-0", now.Add(-time.Minute)))
				h.crm.seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, Marker: "evt-0"})
				h.ledger.doneErr = errors.New("kv unavailable")
			},
			steps: []step{
				{msg: ev{}.msg(), want: app.Verdict{Retry: true, Reason: "ledger"},
					wantCRM: []string{"find email:ada@example.com marker:evt-0"},
					check:   peopleIs("intercom/ada@example.com: pending=evt-0")},
				{before: func(t *testing.T, h *harness) { h.ledger.setErrs(nil, nil, nil, nil) },
					msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"},
					wantCRM: []string{"find email:ada@example.com marker:evt-0"}},
			},
			wantContacts: []string{"c9 lead ada@example.com marker=evt-0"},
			wantLedger:   "intercom/evt-0: done created c9; intercom/evt-1: done skipped c9",
			wantPeople:   "intercom/ada@example.com: contact=c9",
			wantOutcomes: []string{"camp_lead|create_lead|skipped|"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			svcs := []*app.Service{h.svc}
			for range tt.replicas {
				svcs = append(svcs, h.replica(t, h.config()))
			}
			if tt.setup != nil {
				tt.setup(t, h)
			}
			for i, st := range tt.steps {
				if st.before != nil {
					st.before(t, h)
				}
				h.crm.reset()
				h.people.reset()
				got := svcs[st.replica].Handle(context.Background(), st.msg)
				t.Logf("step %d: %s %v %s %v", i+1, got.Outcome, got.Retry, got.Reason, got.Err)
				checkVerdictIn(t, got, st.want, st.delay)
				checkIdentified(t, got, st.msg)
				equalList(t, "CRM calls", h.crm.Calls(""), st.wantCRM)
				if st.check != nil {
					st.check(t, h)
				}
				if t.Failed() {
					t.Fatalf("step %d failed", i+1)
				}
			}
			equalList(t, "contacts", h.crm.Contacts(), tt.wantContacts)
			equalList(t, "outcomes", h.metrics.Outcomes(), tt.wantOutcomes)
			equalList(t, "dead letters", h.dlq.Reasons(), tt.wantDead)
			if got := h.ledger.State(); got != tt.wantLedger {
				t.Errorf("ledger: got %q, want %q", got, tt.wantLedger)
			}
			if got := h.people.State(); got != tt.wantPeople {
				t.Errorf("people: got %q, want %q", got, tt.wantPeople)
			}
		})
	}
}

// seedHandled runs a message through the service and then clears the
// recorders, leaving the state (ledger, people, contacts) behind.
func seedHandled(h *harness, m app.Message) {
	if v := h.svc.Handle(context.Background(), m); v.Retry || v.Outcome == domain.OutcomeDeadLettered {
		panic("seedHandled: " + v.Reason)
	}
	h.crm.reset()
	h.crmEU.reset()
	h.metrics.reset()
	h.people.reset()
	h.ledger.reset()
}

// conflict makes Create answer as Intercom's 409 does: the contact exists,
// under id.
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

func wantNoPeopleLocks(t *testing.T, h *harness) {
	t.Helper()
	if n := h.people.Locks(); n != 0 {
		t.Errorf("person locks: got %d (%q), want none", n, h.people.Calls())
	}
}
