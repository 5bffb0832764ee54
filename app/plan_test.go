package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

// TestPlan checks the dry run's decisions against what Handle would do,
// and that it only reads: after every case the ledger has had no write,
// the CRM no create or update, and no metric, dead letter or record has
// changed.
func TestPlan(t *testing.T) {
	const find = "find email:ada@example.com"
	known := func(p ports.Person) func(t *testing.T, h *harness) {
		return func(t *testing.T, h *harness) { seedPerson(t, h, p) }
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, h *harness)
		msg     app.Message
		want    domain.Outcome
		retry   bool
		wait    bool
		reason  string
		label   string
		action  domain.Action
		contact string
		delay   time.Duration
		wantCRM []string
		reads   int64 // ledger reads
	}{
		{name: "new person: would create", msg: ev{}.msg(),
			want: app.OutcomeWouldCreate, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "match and policy skip",
			setup: func(_ *testing.T, h *harness) { h.crm.Seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada}) },
			msg:   ev{}.msg(), want: app.OutcomeWouldSkip, label: "camp_lead", action: domain.ActionCreateLead, contact: "c9",
			wantCRM: []string{find}, reads: 1},
		{name: "match and policy update picks deterministically",
			setup: func(_ *testing.T, h *harness) {
				h.crm.Seed(domain.Match{ID: "lead", Role: domain.RoleLead, Email: ada, CreatedAt: 1},
					domain.Match{ID: "user", Role: domain.RoleUser, Email: ada, CreatedAt: 2})
			},
			msg: ev{Campaign: "camp_update"}.msg(), want: app.OutcomeWouldUpdate, label: "camp_update", action: domain.ActionCreateLead, contact: "user",
			wantCRM: []string{find}, reads: 1},
		{name: "known person needs no search", setup: known(ports.Person{ContactID: "c7"}),
			msg: ev{Campaign: "camp_update"}.msg(), want: app.OutcomeWouldUpdate, label: "camp_update", action: domain.ActionCreateLead, contact: "c7",
			reads: 1},
		{name: "settled event is a duplicate",
			setup: known(ports.Person{ContactID: "c1", Events: []ports.EventRecord{{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c1", At: now, CountedBy: seeded}}}),
			msg:   ev{}.msg(), want: domain.OutcomeDuplicate, label: "camp_lead", action: domain.ActionCreateLead, contact: "c1", reads: 1},
		{name: "dead-lettered event is a duplicate",
			setup: known(ports.Person{Events: []ports.EventRecord{{ID: "evt-1", Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected, At: now, CountedBy: seeded}}}),
			msg:   ev{}.msg(), want: domain.OutcomeDuplicate, label: "camp_lead", action: domain.ActionCreateLead, reads: 1},
		{name: "a replay of a dead-lettered event would be applied afresh, as Handle does",
			setup: known(ports.Person{Events: []ports.EventRecord{{ID: "evt-1", Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected, At: now, CountedBy: seeded}}}),
			msg:   replayOf(ev{}.msg(), "dlq-7"), want: app.OutcomeWouldCreate, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "an event out of attempts in the ledger would be dead-lettered, as Handle does",
			setup: known(ports.Person{Events: []ports.EventRecord{{ID: "evt-1", Failures: maxAttempts, Reason: app.CauseTransient, At: now}}}),
			msg:   ev{}.msg(), want: app.OutcomeWouldDeadLetter, reason: app.ReasonAttemptsExhausted, label: "camp_lead", action: domain.ActionCreateLead,
			reads: 1},
		{name: "another event's pending create is not resolved: decided from the CRM as it is",
			setup: known(ports.Person{Pending: pendingBy("evt-0", now.Add(time.Minute))}),
			msg:   ev{}.msg(), want: app.OutcomeWouldCreate, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "action nothing", msg: ev{Campaign: "camp_nothing"}.msg(),
			want: domain.OutcomeNothing, label: "camp_nothing", action: domain.ActionNothing},
		{name: "unconfigured campaign", msg: ev{Campaign: "winter"}.msg(),
			want: domain.OutcomeUnconfigured, label: app.LabelUnconfigured},
		{name: "malformed body", msg: delivery([]byte(`{"specversion":`), 1),
			want: app.OutcomeWouldDeadLetter, reason: domain.ReasonMalformed, label: app.LabelUnknown},
		{name: "invalid email is labelled with its campaign, as Handle does", msg: ev{Email: "ada(at)example"}.msg(),
			want: app.OutcomeWouldDeadLetter, reason: domain.ReasonInvalidEmail, label: "camp_lead"},
		{name: "mapping failure", msg: ev{Campaign: "camp_badmap", Meta: map[string]any{"opt_out": "perhaps"}}.msg(),
			want: app.OutcomeWouldDeadLetter, reason: domain.ReasonMapping, label: "camp_badmap", action: domain.ActionCreateLead},
		{name: "a connection without a CRM is a wait",
			setup: func(_ *testing.T, h *harness) {
				c := testCatalog()
				c.Campaigns["camp_hub"] = domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
				h.svc.SetCatalog(c)
			},
			msg: ev{Campaign: "camp_hub"}.at(maxAttempts), retry: true, wait: true, reason: app.CauseNoCRM, label: "camp_hub", action: domain.ActionCreateLead},
		{name: "CRM refuses the search",
			setup: func(_ *testing.T, h *harness) { faults(h).on("find", 0, memory.Fault{Err: crmErr(ports.Permanent)}) },
			msg:   ev{}.msg(), want: app.OutcomeWouldDeadLetter, reason: app.ReasonCRMRejected, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "transient failure is retried",
			setup: func(_ *testing.T, h *harness) { faults(h).on("find", 0, memory.Fault{Err: crmErr(ports.Transient)}) },
			msg:   ev{}.at(2), retry: true, reason: app.CauseTransient, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "transient failure at the last attempt",
			setup: func(_ *testing.T, h *harness) { faults(h).on("find", 0, memory.Fault{Err: crmErr(ports.Transient)}) },
			msg:   ev{}.at(maxAttempts), want: app.OutcomeWouldDeadLetter, reason: app.ReasonAttemptsExhausted, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "refused token at the last attempt",
			setup: func(_ *testing.T, h *harness) { faults(h).on("find", 0, memory.Fault{Err: crmErr(ports.Unauthorized)}) },
			msg:   ev{}.at(maxAttempts), want: app.OutcomeWouldDeadLetter, reason: app.ReasonUnauthorized, label: "camp_lead", action: domain.ActionCreateLead,
			wantCRM: []string{find}, reads: 1},
		{name: "a rate limit is a wait, even at the last attempt",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 0, memory.Fault{Err: &ports.Error{Op: "search", Kind: ports.RateLimited, RetryAfter: 3 * time.Second}})
			},
			msg: ev{}.at(maxAttempts), retry: true, wait: true, reason: app.CauseRateLimited, delay: 3 * time.Second,
			label: "camp_lead", action: domain.ActionCreateLead, wantCRM: []string{find}, reads: 1},
		{name: "a ledger read failure is a wait, even at the last attempt, as in Handle",
			setup: func(_ *testing.T, h *harness) { failLedger(h, "person", 0) },
			msg:   ev{}.at(maxAttempts), retry: true, wait: true, reason: app.CauseLedger, label: "camp_lead", action: domain.ActionCreateLead,
			reads: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			h.crm.Reset()
			before := ledgerState(h.ledger)
			r0, w0 := h.ledger.Ops()

			got := h.svc.Plan(context.Background(), tt.msg)

			if got.Outcome != tt.want || got.Retry != tt.retry || got.Wait != tt.wait || got.Reason != tt.reason || got.Delay != tt.delay {
				t.Errorf("got outcome=%q retry=%v wait=%v reason=%q delay=%v (err %v), want outcome=%q retry=%v wait=%v reason=%q delay=%v",
					got.Outcome, got.Retry, got.Wait, got.Reason, got.Delay, got.Err, tt.want, tt.retry, tt.wait, tt.reason, tt.delay)
			}
			if got.Label != tt.label || got.Action != tt.action || got.ContactID != tt.contact {
				t.Errorf("got label=%q action=%q contact=%q, want %q %q %q", got.Label, got.Action, got.ContactID, tt.label, tt.action, tt.contact)
			}
			checkIdentified(t, got.Verdict, tt.msg)
			// Reads only.
			equalList(t, "CRM calls", callsOf(h.crm), tt.wantCRM)
			r, w := h.ledger.Ops()
			if r-r0 != tt.reads || w != w0 {
				t.Errorf("ledger operations: got %d reads %d writes, want %d reads and no write", r-r0, w-w0, tt.reads)
			}
			if after := ledgerState(h.ledger); after != before {
				t.Errorf("ledger changed:\n got %q\nwant %q", after, before)
			}
			if o, re, p, a := h.metrics.Outcomes(), h.metrics.Retries(), h.metrics.ProcessedTimes(), h.metrics.EventAges(); len(o)+len(re)+len(p)+len(a) != 0 {
				t.Errorf("metrics: got outcomes %v retries %v processed %v ages %v, want none", o, re, p, a)
			}
			if d := h.dlq.Letters(); len(d) != 0 {
				t.Errorf("dead letters: got %d, want none", len(d))
			}
		})
	}
}

// TestPlanSeesOneCatalog checks that Plan follows SetCatalog, as Handle
// does: a reload applies to the next message.
func TestPlanSeesOneCatalog(t *testing.T) {
	h := newHarness(t)
	msg := ev{Campaign: "autumn"}.msg()
	if got := h.svc.Plan(context.Background(), msg).Outcome; got != domain.OutcomeUnconfigured {
		t.Fatalf("before: got %q, want unconfigured", got)
	}
	cat := testCatalog()
	cat.Campaigns["autumn"] = domain.Campaign{Connection: "intercom", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateSkip,
		Fields: []domain.Field{emailField}}
	h.svc.SetCatalog(cat)
	if got := h.svc.Plan(context.Background(), msg); got.Outcome != app.OutcomeWouldCreate || got.Action != domain.ActionCreateUser || got.Label != "autumn" {
		t.Errorf("after: got %q %q %q, want would_create create_user autumn", got.Outcome, got.Action, got.Label)
	}
}

// TestPlanThenHandle runs the dry run and the real thing on the same
// deliveries: the dry run's would-be outcome is what Handle then does,
// and the dry run changed nothing Handle sees.
func TestPlanThenHandle(t *testing.T) {
	tests := []struct {
		name string
		msg  app.Message
		plan domain.Outcome
		real domain.Outcome
	}{
		{name: "create", msg: ev{ID: "e1"}.msg(), plan: app.OutcomeWouldCreate, real: domain.OutcomeCreated},
		{name: "skip", msg: ev{ID: "e2"}.msg(), plan: app.OutcomeWouldSkip, real: domain.OutcomeSkipped},
		{name: "update", msg: ev{ID: "e3", Campaign: "camp_update"}.msg(), plan: app.OutcomeWouldUpdate, real: domain.OutcomeUpdated},
		{name: "duplicate", msg: ev{ID: "e3", Campaign: "camp_update"}.at(2), plan: domain.OutcomeDuplicate, real: domain.OutcomeDuplicate},
		{name: "nothing", msg: ev{ID: "e4", Campaign: "camp_nothing"}.msg(), plan: domain.OutcomeNothing, real: domain.OutcomeNothing},
	}
	h := newHarness(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := h.svc.Plan(context.Background(), tt.msg); got.Outcome != tt.plan {
				t.Errorf("Plan: got %q, want %q", got.Outcome, tt.plan)
			}
			if got := h.svc.Handle(context.Background(), tt.msg); got.Outcome != tt.real {
				t.Errorf("Handle: got %q (%s %v), want %q", got.Outcome, got.Reason, got.Err, tt.real)
			}
		})
	}
	equalList(t, "contacts", contactsOf(h.crm), []string{"c1 lead ada@example.com marker=e1"})
}
