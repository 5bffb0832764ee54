package app_test

// Plan's tests use fakes of their own (prefixed plan), which record every
// call, so that "nothing was written" is checked against all of them.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// planCalls records the calls of every plan fake, in order.
type planCalls struct {
	mu    sync.Mutex
	calls []string
}

func (c *planCalls) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf(format, args...))
}

func (c *planCalls) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

type planCRM struct {
	log     *planCalls
	matches []domain.Match
	findErr error
}

func (f *planCRM) Find(_ context.Context, who domain.Identity) ([]domain.Match, error) {
	f.log.add("crm find %s", who.Email)
	return f.matches, f.findErr
}

func (f *planCRM) Create(context.Context, domain.Contact) (ports.Created, error) {
	f.log.add("crm create")
	return ports.Created{ID: "new"}, nil
}

func (f *planCRM) Update(context.Context, string, domain.Contact) error {
	f.log.add("crm update")
	return nil
}

type planLedger struct {
	log  *planCalls
	done map[string]ports.Record
}

func (l *planLedger) Event(_ context.Context, key string) (ports.EventRecord, error) {
	l.log.add("ledger event %s", key)
	if r, ok := l.done[key]; ok {
		return ports.EventRecord{Done: &r}, nil
	}
	return ports.EventRecord{}, nil
}

func (l *planLedger) Done(context.Context, string, ports.Record) error {
	l.log.add("ledger done")
	return nil
}

func (l *planLedger) Failed(context.Context, string, time.Time) (ports.EventRecord, error) {
	l.log.add("ledger failed")
	return ports.EventRecord{Failures: 1}, nil
}

func (l *planLedger) Clear(context.Context, string) error {
	l.log.add("ledger clear")
	return nil
}

// planPeople remembers contacts by connection/email and, like the KV
// ledger, can tell them without a lock.
type planPeople struct {
	log      *planCalls
	contacts map[string]string
}

func (p *planPeople) Lock(context.Context, string, string) (ports.Person, error) {
	p.log.add("people lock")
	return ports.Person{}, nil
}

func (p *planPeople) Save(context.Context, *ports.Person) error {
	p.log.add("people save")
	return nil
}

func (p *planPeople) Unlock(context.Context, ports.Person) error {
	p.log.add("people unlock")
	return nil
}

func (p *planPeople) PersonContact(_ context.Context, conn, email string) (string, error) {
	p.log.add("people contact %s/%s", conn, email)
	return p.contacts[conn+"/"+email], nil
}

type planDLQ struct{ log *planCalls }

func (d planDLQ) DeadLetter(context.Context, ports.DeadLetter) error {
	d.log.add("dead letter")
	return nil
}

type planMetrics struct{ log *planCalls }

func (m planMetrics) Outcome(string, domain.Action, domain.Outcome, string) {
	m.log.add("metric outcome")
}
func (m planMetrics) Retry(string, string)    { m.log.add("metric retry") }
func (m planMetrics) Processed(time.Duration) { m.log.add("metric processed") }
func (m planMetrics) EventAge(time.Duration)  { m.log.add("metric event age") }

func TestPlan(t *testing.T) {
	lookup := "ledger event intercom/evt-1"
	find := "crm find ada@example.com"
	contact := "people contact intercom/ada@example.com"
	tests := []struct {
		name     string
		msg      app.Message
		matches  []domain.Match
		findErr  error
		done     map[string]ports.Record
		known    map[string]string
		want     domain.Outcome
		retry    bool
		reason   string
		label    string
		action   domain.Action
		contact  string
		wantCall []string // every call to every fake, in order
	}{
		{name: "new person: would create", msg: ev{}.msg(),
			want: app.OutcomeWouldCreate, label: "camp_lead", action: domain.ActionCreateLead,
			wantCall: []string{lookup, contact, find}},
		{name: "match and policy skip", msg: ev{}.msg(), matches: []domain.Match{{ID: "c9", Role: domain.RoleLead, Email: ada}},
			want: app.OutcomeWouldSkip, label: "camp_lead", action: domain.ActionCreateLead, contact: "c9",
			wantCall: []string{lookup, contact, find}},
		{name: "match and policy update picks deterministically", msg: ev{Campaign: "camp_update"}.msg(),
			matches: []domain.Match{{ID: "lead", Role: domain.RoleLead, Email: ada, CreatedAt: 1}, {ID: "user", Role: domain.RoleUser, Email: ada, CreatedAt: 2}},
			want:    app.OutcomeWouldUpdate, label: "camp_update", action: domain.ActionCreateLead, contact: "user",
			wantCall: []string{lookup, contact, find}},
		{name: "known person needs no search", msg: ev{Campaign: "camp_update"}.msg(), known: map[string]string{"intercom/" + ada: "c7"},
			want: app.OutcomeWouldUpdate, label: "camp_update", action: domain.ActionCreateLead, contact: "c7",
			wantCall: []string{lookup, contact}},
		{name: "applied event is a duplicate", msg: ev{}.msg(), done: map[string]ports.Record{"intercom/evt-1": {Outcome: domain.OutcomeCreated, ContactID: "c1"}},
			want: domain.OutcomeDuplicate, label: "camp_lead", action: domain.ActionCreateLead, contact: "c1",
			wantCall: []string{lookup}},
		{name: "action nothing", msg: ev{Campaign: "camp_nothing"}.msg(),
			want: domain.OutcomeNothing, label: "camp_nothing", action: domain.ActionNothing},
		{name: "unconfigured campaign", msg: ev{Campaign: "winter"}.msg(),
			want: domain.OutcomeUnconfigured, label: app.LabelUnconfigured},
		{name: "malformed body", msg: delivery([]byte(`{"specversion":`), 1),
			want: app.OutcomeWouldDeadLetter, reason: domain.ReasonMalformed, label: app.LabelUnknown},
		{name: "invalid email", msg: ev{Email: "ada(at)example"}.msg(),
			want: app.OutcomeWouldDeadLetter, reason: domain.ReasonInvalidEmail, label: app.LabelUnknown},
		{name: "mapping failure", msg: ev{Campaign: "camp_badmap", Meta: map[string]any{"opt_out": "perhaps"}}.msg(),
			want: app.OutcomeWouldDeadLetter, reason: domain.ReasonMapping, label: "camp_badmap", action: domain.ActionCreateLead},
		{name: "CRM refuses the search", msg: ev{}.msg(), findErr: crmErr(ports.Permanent),
			want: app.OutcomeWouldDeadLetter, reason: app.ReasonCRMRejected, label: "camp_lead", action: domain.ActionCreateLead,
			wantCall: []string{lookup, contact, find}},
		{name: "transient failure is retried", msg: ev{}.at(2), findErr: crmErr(ports.Transient),
			retry: true, reason: "transient", label: "camp_lead", action: domain.ActionCreateLead,
			wantCall: []string{lookup, contact, find}},
		{name: "transient failure at the last attempt", msg: ev{}.at(maxAttempts), findErr: crmErr(ports.Transient),
			want: app.OutcomeWouldDeadLetter, reason: app.ReasonAttemptsExhausted, label: "camp_lead", action: domain.ActionCreateLead,
			wantCall: []string{lookup, contact, find}},
		{name: "refused token at the last attempt", msg: ev{}.at(maxAttempts), findErr: crmErr(ports.Unauthorized),
			want: app.OutcomeWouldDeadLetter, reason: app.ReasonUnauthorized, label: "camp_lead", action: domain.ActionCreateLead,
			wantCall: []string{lookup, contact, find}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := &planCalls{}
			crm := &planCRM{log: calls, matches: tt.matches, findErr: tt.findErr}
			svc, err := app.New(app.Config{
				Catalog:     testCatalog(),
				CRMs:        map[string]ports.CRM{"intercom": crm, "intercom_eu": crm},
				Ledger:      &planLedger{log: calls, done: tt.done},
				People:      &planPeople{log: calls, contacts: tt.known},
				DeadLetters: planDLQ{log: calls},
				Metrics:     planMetrics{log: calls},
				MaxAttempts: maxAttempts,
				Now:         func() time.Time { return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			got := svc.Plan(context.Background(), tt.msg)
			if got.Outcome != tt.want || got.Retry != tt.retry || got.Reason != tt.reason {
				t.Errorf("got outcome=%q retry=%v reason=%q (err %v), want outcome=%q retry=%v reason=%q",
					got.Outcome, got.Retry, got.Reason, got.Err, tt.want, tt.retry, tt.reason)
			}
			if got.Label != tt.label || got.Action != tt.action || got.ContactID != tt.contact {
				t.Errorf("got label=%q action=%q contact=%q, want %q %q %q", got.Label, got.Action, got.ContactID, tt.label, tt.action, tt.contact)
			}
			if c := calls.all(); !slices.Equal(c, tt.wantCall) {
				t.Errorf("got calls %q, want %q (reads only)", c, tt.wantCall)
			}
		})
	}
}

// TestPlanSeesOneCatalog checks that Plan follows SetCatalog, as Handle
// does: a reload applies to the next message.
func TestPlanSeesOneCatalog(t *testing.T) {
	calls := &planCalls{}
	crm := &planCRM{log: calls}
	svc, err := app.New(app.Config{
		Catalog: testCatalog(), CRMs: map[string]ports.CRM{"intercom": crm, "intercom_eu": crm},
		Ledger: &planLedger{log: calls}, People: &planPeople{log: calls}, DeadLetters: planDLQ{log: calls}, Metrics: planMetrics{log: calls},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := ev{Campaign: "autumn"}.msg()
	if got := svc.Plan(context.Background(), msg).Outcome; got != domain.OutcomeUnconfigured {
		t.Fatalf("before: got %q, want unconfigured", got)
	}
	cat := testCatalog()
	cat.Campaigns["autumn"] = domain.Campaign{Connection: "intercom", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateSkip,
		Fields: []domain.Field{emailField}}
	svc.SetCatalog(cat)
	if got := svc.Plan(context.Background(), msg); got.Outcome != app.OutcomeWouldCreate || got.Action != domain.ActionCreateUser {
		t.Errorf("after: got %q %q, want would_create create_user", got.Outcome, got.Action)
	}
}

func TestPlanWithoutContactBookSearches(t *testing.T) {
	calls := &planCalls{}
	crm := &planCRM{log: calls, matches: []domain.Match{{ID: "c3", Role: domain.RoleUser, Email: ada}}}
	svc, err := app.New(app.Config{
		Catalog: testCatalog(), CRMs: map[string]ports.CRM{"intercom": crm, "intercom_eu": crm},
		Ledger: &planLedger{log: calls}, People: lockOnly{}, DeadLetters: planDLQ{log: calls}, Metrics: planMetrics{log: calls},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := svc.Plan(context.Background(), ev{Campaign: "camp_update"}.msg())
	if got.Outcome != app.OutcomeWouldUpdate || got.ContactID != "c3" {
		t.Errorf("got %q %q, want would_update c3", got.Outcome, got.ContactID)
	}
	if c := calls.all(); !slices.Equal(c, []string{"ledger event intercom/evt-1", "crm find ada@example.com"}) {
		t.Errorf("got calls %q", c)
	}
}

// lockOnly is a People without PersonContact.
type lockOnly struct{}

func (lockOnly) Lock(context.Context, string, string) (ports.Person, error) {
	return ports.Person{}, errors.New("lockOnly: Lock called by Plan")
}
func (lockOnly) Save(context.Context, *ports.Person) error {
	return errors.New("lockOnly: Save called by Plan")
}
func (lockOnly) Unlock(context.Context, ports.Person) error {
	return errors.New("lockOnly: Unlock called by Plan")
}
