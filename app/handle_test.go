package app_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

// The tests of one delivery (TestHandle), of sequences of deliveries
// (TestRedeliveries) and of the ledger's budget per path (TestKVBudget).
// They run on the in-memory ports of harness_test.go and compare the state
// those ports are left in, printed compactly by the helpers below.

func equalList[T any](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// callsOf prints the calls made to a CRM: "find email:… xid:… marker:…",
// "create lead …", "update c1".
func callsOf(crm *memory.CRM) []string {
	var out []string
	for _, c := range crm.Calls() {
		switch c.Op {
		case "find":
			var parts []string
			if c.Who.Email != "" {
				parts = append(parts, "email:"+c.Who.Email)
			}
			if c.Who.ExternalID != "" {
				parts = append(parts, "xid:"+c.Who.ExternalID)
			}
			if c.Who.Marker != "" {
				parts = append(parts, "marker:"+c.Who.Marker)
			}
			out = append(out, "find "+strings.Join(parts, " "))
		case "create":
			out = append(out, "create "+string(c.Contact.Role)+" "+c.Contact.Email)
		case "update":
			out = append(out, "update "+c.ID)
		}
	}
	return out
}

// writesOf counts the CRM calls that write.
func writesOf(crm *memory.CRM) int {
	n := 0
	for _, c := range crm.Calls() {
		if c.Op == "create" || c.Op == "update" {
			n++
		}
	}
	return n
}

// contactsOf prints a CRM's contacts: "c1 lead ada@example.com marker=evt-1".
func contactsOf(crm *memory.CRM) []string {
	var out []string
	for _, c := range crm.Contacts() {
		s := c.ID + " " + string(c.Role) + " " + c.Email
		if c.ExternalID != "" {
			s += " xid=" + c.ExternalID
		}
		if c.Marker != "" {
			s += " marker=" + c.Marker
		}
		out = append(out, s)
	}
	return out
}

// personState prints one person record: its contact, its pending create
// (with the clock time of its not-after) and its events, oldest first.
func personState(p ports.Person) string {
	s := p.Connection + "/" + p.Email + ":"
	if p.ContactID != "" {
		s += " contact=" + p.ContactID
	}
	if p.Pending != nil {
		s += " pending=" + p.Pending.EventID + "@" + p.Pending.NotAfter.Format("15:04:05")
		if p.Pending.ExternalID != "" {
			s += "/xid=" + p.Pending.ExternalID
		}
	}
	for _, r := range p.Events {
		s += " | " + eventState(r)
	}
	return s
}

// eventState prints one event record: "evt-1 created c1", "evt-1 failing
// failures=1 reason=transient", with its flags.
func eventState(r ports.EventRecord) string {
	s := r.ID + " "
	if r.Terminal() {
		s += string(r.Outcome)
	} else {
		s += "failing"
	}
	if r.ContactID != "" {
		s += " " + r.ContactID
	}
	if r.Failures > 0 {
		s += fmt.Sprintf(" failures=%d", r.Failures)
	}
	if r.Reason != "" {
		s += " reason=" + r.Reason
	}
	if r.Terminal() && r.CountedBy == "" {
		s += " unreported" // its own message has yet to count it
	}
	if r.ReplayedFrom != "" {
		s += " replayed=" + r.ReplayedFrom
	}
	return s
}

// ledgerState prints every person record, joined by "; ".
func ledgerState(l *memory.Ledger) string {
	var out []string
	for _, p := range l.All() {
		out = append(out, personState(p))
	}
	return strings.Join(out, "; ")
}

// person reads one record from the harness's ledger.
func person(t *testing.T, h *harness, conn, email string) ports.Person {
	t.Helper()
	p, err := h.ledger.Person(context.Background(), conn, email)
	if err != nil {
		t.Fatalf("ledger read: %v", err)
	}
	return p
}

// seedPerson stores a record for Ada on "intercom" as another worker left
// it, and forgets the operation counts' origin by returning them.
func seedPerson(t *testing.T, h *harness, p ports.Person) {
	t.Helper()
	if p.Connection == "" {
		p.Connection, p.Email = "intercom", ada
	}
	cur := person(t, h, p.Connection, p.Email)
	p.Revision = cur.Revision
	if err := h.ledger.Put(context.Background(), &p); err != nil {
		t.Fatalf("seed ledger: %v", err)
	}
}

// seeded names the delivery that counted a seeded event's outcome.
const seeded = "replica-0#1"

// pendingBy is a pending create of event id whose not-after is at.
func pendingBy(id string, at time.Time) *ports.PendingCreate {
	return &ports.PendingCreate{EventID: id, Owner: "replica-0", NotAfter: at}
}

// crmFaults injects faults into CRM calls by operation ("find", "create",
// "update", "update-response"); each fault applies to the next calls of
// its operation, as many as its count (0: every call).
type crmFaults struct {
	mu    sync.Mutex
	rules []crmRule
}

type crmRule struct {
	op    string
	fault memory.Fault
	left  int // calls left; -1: every call
	hook  func(memory.Call)
}

// on adds a fault for the next n calls of op (n 0: every call).
func (f *crmFaults) on(op string, n int, fault memory.Fault) *crmFaults {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n == 0 {
		n = -1
	}
	f.rules = append(f.rules, crmRule{op: op, fault: fault, left: n})
	return f
}

// do runs hook at the next call of op (before the call has any effect).
func (f *crmFaults) do(op string, hook func(memory.Call)) *crmFaults {
	return f.with(op, hook, memory.Fault{})
}

// with runs hook at the next call of op, then fails it with fault.
func (f *crmFaults) with(op string, hook func(memory.Call), fault memory.Fault) *crmFaults {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, crmRule{op: op, fault: fault, left: 1, hook: hook})
	return f
}

func (f *crmFaults) fault(c memory.Call) memory.Fault {
	f.mu.Lock()
	for i := range f.rules {
		r := &f.rules[i]
		if r.op != c.Op || r.left == 0 {
			continue
		}
		if r.left > 0 {
			r.left--
		}
		f.mu.Unlock()
		if r.hook != nil {
			r.hook(c)
		}
		return r.fault
	}
	f.mu.Unlock()
	return memory.Fault{}
}

// faults installs a fault injector on the harness's "intercom" CRM.
func faults(h *harness) *crmFaults {
	f := &crmFaults{}
	h.crm.Fault = f.fault
	return f
}

// ledgerFaults fails the ledger's operations ("person", "put") by their
// number: fail("put", 2) fails the second put from now on, fail("put", 0)
// every put.
type ledgerFaults struct {
	mu    sync.Mutex
	count map[string]int
	fails map[string][]int
}

func failLedger(h *harness, op string, nth ...int) *ledgerFaults {
	f := &ledgerFaults{count: map[string]int{}, fails: map[string][]int{op: nth}}
	h.ledger.Fault = f.fault
	return f
}

var errKV = errors.New("kv unavailable")

func (f *ledgerFaults) fault(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count[op]++
	for _, n := range f.fails[op] {
		if n == 0 || n == f.count[op] {
			return errKV
		}
	}
	return nil
}

// transientErr is a 5xx that certainly did nothing; lostErr one that may
// have (the request was sent, no answer came).
var (
	transientErr = &ports.Error{Op: "test", Kind: ports.Transient, Status: 503}
	lostErr      = &ports.Error{Op: "test", Kind: ports.Transient, Uncertain: true}
)

// checkVerdict compares the parts of a verdict a caller acts on.
func checkVerdict(t *testing.T, got, want app.Verdict) {
	t.Helper()
	if got.Outcome != want.Outcome || got.Retry != want.Retry || got.Wait != want.Wait || got.Reason != want.Reason ||
		got.ContactID != want.ContactID || got.Delay != want.Delay {
		t.Errorf("verdict: got {Outcome:%q Retry:%v Wait:%v Reason:%q ContactID:%q Delay:%v Err:%v}, want {Outcome:%q Retry:%v Wait:%v Reason:%q ContactID:%q Delay:%v}",
			got.Outcome, got.Retry, got.Wait, got.Reason, got.ContactID, got.Delay, got.Err,
			want.Outcome, want.Retry, want.Wait, want.Reason, want.ContactID, want.Delay)
	}
	failed := got.Retry || got.Outcome == domain.OutcomeDeadLettered
	if failed != (got.Err != nil) {
		t.Errorf("verdict error: got %v, want an error exactly when retried or dead-lettered", got.Err)
	}
	if got.Retry && got.Outcome != "" {
		t.Errorf("retry verdict outcome: got %q, want none", got.Outcome)
	}
}

// checkIdentified pins that a verdict names its event and campaign as far
// as the message could be read.
func checkIdentified(t *testing.T, got app.Verdict, m app.Message) {
	t.Helper()
	e, _ := domain.DecodeEvent(m.Body, m.Headers)
	if got.EventID != e.ID || got.Campaign != e.CampaignID {
		t.Errorf("verdict identity: got event %q campaign %q, want %q, %q", got.EventID, got.Campaign, e.ID, e.CampaignID)
	}
}

// countedOnce pins "every settled message is counted exactly once": the
// outcomes counted during one delivery are one, the verdict's, when it
// settled, and none when it is retried.
func countedOnce(t *testing.T, before []memory.Outcome, h *harness, v app.Verdict) {
	t.Helper()
	added := h.metrics.Outcomes()[len(before):]
	switch {
	case v.Retry && len(added) != 0:
		t.Errorf("outcomes counted for a retry: got %v, want none", added)
	case !v.Retry && len(added) != 1:
		t.Errorf("outcomes counted: got %v, want exactly one", added)
	case !v.Retry && added[0].Outcome != v.Outcome:
		t.Errorf("outcome counted: got %v, want the verdict's %q", added[0], v.Outcome)
	}
}

func outcomeStrings(os []memory.Outcome) []string {
	var out []string
	for _, o := range os {
		out = append(out, o.String())
	}
	return out
}

func deadReasons(d *memory.DeadLetters) []string {
	var out []string
	for _, l := range d.Letters() {
		out = append(out, l.Reason)
	}
	return out
}

// States of Ada's record.
const (
	adaRec    = "intercom/ada@example.com:"
	adaC1     = adaRec + " contact=c1"
	evt1C1    = adaC1 + " | evt-1 created c1"
	evt1First = adaRec + " | evt-1 failing failures=1 reason=transient"
)

// Verdicts.
var (
	createdC1   = app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"}
	retryTrans  = app.Verdict{Retry: true, Reason: app.CauseTransient}
	waitLedger  = app.Verdict{Retry: true, Wait: true, Reason: app.CauseLedger}
	dupC1       = app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c1"}
	deadExhaust = app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonAttemptsExhausted}
	deadReject  = app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected}
)

func busyFor(d time.Duration) app.Verdict {
	return app.Verdict{Retry: true, Wait: true, Reason: app.CausePersonBusy, Delay: d}
}

func awaitingFor(d time.Duration) app.Verdict {
	return app.Verdict{Retry: true, Wait: true, Reason: app.CauseAwaitingSearch, Delay: d}
}

// lease and grace are the default lease and commit grace the harness runs
// with.
const (
	lease = app.DefaultLease
	grace = app.DefaultCommitGrace
)

// handleCase is one TestHandle case: a message, the state before it, and
// every effect expected of it.
type handleCase struct {
	name  string
	setup func(t *testing.T, h *harness)
	msg   app.Message
	want  app.Verdict

	wantCRM      []string // calls on connection "intercom"
	wantOutcomes []string // memory.Outcome.String()
	wantRetries  []string // "campaign|cause"
	wantDead     []string // dead-letter reasons
	wantLedger   string   // ledgerState
	wantContacts []string // contactsOf "intercom"; checked when set
	wantAges     []time.Duration
	check        func(t *testing.T, h *harness, v app.Verdict)
}

func logged(t *testing.T, h *harness, msg string, level string, attrs map[string]any) {
	t.Helper()
	got := h.logs.Matching(msg)
	if len(got) != 1 {
		t.Errorf("logs %q: got %d (%+v), want 1", msg, len(got), got)
		return
	}
	if got[0].Level.String() != level {
		t.Errorf("log %q level: got %v, want %s", msg, got[0].Level, level)
	}
	for k, v := range attrs {
		if got[0].Attrs[k] != v {
			t.Errorf("log %q attribute %s: got %v, want %v", msg, k, got[0].Attrs[k], v)
		}
	}
}

func TestHandle(t *testing.T) {
	five := []time.Duration{5 * time.Second}
	withCatalog := func(edit func(c *domain.Catalog)) func(*testing.T, *harness) {
		return func(_ *testing.T, h *harness) {
			c := testCatalog()
			edit(c)
			h.svc.SetCatalog(c)
		}
	}
	hub := func(c *domain.Catalog) {
		c.Campaigns["camp_hub"] = domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead,
			OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
	}
	failing := func(n int, reason string) ports.EventRecord {
		return ports.EventRecord{ID: "evt-1", Failures: n, Reason: reason, FirstFailure: now.Add(-time.Hour), At: now.Add(-time.Minute)}
	}
	seedEvents := func(rs ...ports.EventRecord) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) { seedPerson(t, h, ports.Person{Events: rs}) }
	}
	tests := []handleCase{
		// Creating.
		{
			name: "new lead is created, recorded as pending with its not-after before it is sent",
			setup: func(t *testing.T, h *harness) {
				faults(h).do("create", func(memory.Call) {
					p := person(t, h, "intercom", ada)
					if want := now.Add(lease); p.Pending == nil || p.Pending.EventID != "evt-1" || !p.Pending.NotAfter.Equal(want) || p.Pending.Owner == "" {
						t.Errorf("pending create when Create was sent: got %+v, want evt-1 not after %v with an owner", p.Pending, want)
					}
				})
			},
			msg:          ev{}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   evt1C1,
			wantContacts: []string{"c1 lead ada@example.com marker=evt-1"},
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				c := h.crm.Calls()[1].Contact
				want := domain.Contact{Role: domain.RoleLead, Email: ada, Name: "Ada",
					Custom: map[string]any{"referral_link": "https://refer.example.com/ADA-7Q2"}, Marker: "evt-1"}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("created contact: got %+v, want %+v", c, want)
				}
			},
		},
		{
			name:         "new user is created and found by external id",
			msg:          ev{Campaign: "camp_user"}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com xid:usr_8812", "create user ada@example.com"},
			wantOutcomes: []string{"camp_user|create_user|created"},
			wantLedger:   evt1C1,
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-1"},
			wantAges:     five,
		},
		{
			name:         "binary mode",
			msg:          ev{}.binary(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   evt1C1,
			wantAges:     five,
		},

		// Existing contacts.
		{
			name:         "existing contact with policy skip writes nothing to the CRM",
			setup:        func(_ *testing.T, h *harness) { h.crm.Seed(domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada}) },
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "l1"},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|skipped"},
			wantLedger:   adaRec + " contact=l1 | evt-1 skipped l1",
			wantAges:     five,
		},
		{
			name:         "existing contact with policy update is updated without a role or marker",
			setup:        func(_ *testing.T, h *harness) { h.crm.Seed(domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada}) },
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "l1"},
			wantCRM:      []string{"find email:ada@example.com", "update l1"},
			wantOutcomes: []string{"camp_update|create_lead|updated"},
			wantLedger:   adaRec + " contact=l1 | evt-1 updated l1",
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				if c, want := h.crm.Calls()[1].Contact, (domain.Contact{Email: ada, Name: "Ada"}); !reflect.DeepEqual(c, want) {
					t.Errorf("update: got %+v, want %+v", c, want)
				}
			},
		},
		{
			name: "several matches: the user is updated before an older lead",
			setup: func(_ *testing.T, h *harness) {
				h.crm.Seed(
					domain.Match{ID: "l1", Role: domain.RoleLead, Email: ada, CreatedAt: 1},
					domain.Match{ID: "u2", Role: domain.RoleUser, Email: ada, CreatedAt: 9},
					domain.Match{ID: "u1", Role: domain.RoleUser, Email: ada, CreatedAt: 5},
				)
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "u1"},
			wantCRM:      []string{"find email:ada@example.com", "update u1"},
			wantOutcomes: []string{"camp_update|create_lead|updated"},
			wantLedger:   adaRec + " contact=u1 | evt-1 updated u1",
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				logged(t, h, "several contacts match", "INFO", map[string]any{"contact_id": "u1"})
			},
		},
		{
			name: "several matches: the external id match is updated first",
			setup: func(_ *testing.T, h *harness) {
				h.crm.Seed(
					domain.Match{ID: "u1", Role: domain.RoleUser, Email: ada, CreatedAt: 1},
					domain.Match{ID: "l9", Role: domain.RoleLead, Email: "old@example.com", ExternalID: "usr_8812", CreatedAt: 9},
				)
			},
			msg:          ev{Campaign: "camp_user"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "l9"},
			wantCRM:      []string{"find email:ada@example.com xid:usr_8812", "update l9"},
			wantOutcomes: []string{"camp_user|create_user|updated"},
			wantLedger:   adaRec + " contact=l9 | evt-1 updated l9",
			wantAges:     five,
		},
		{
			name: "create answered existing (a user search did not show yet) with policy skip is skipped",
			setup: func(t *testing.T, h *harness) {
				h.crm.SearchLag = time.Minute
				existingUser(t, h, "")
			},
			msg:          ev{Campaign: "camp_user_email"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"},
			wantCRM:      []string{"find email:ada@example.com", "create user ada@example.com"},
			wantOutcomes: []string{"camp_user_email|create_user|skipped"},
			wantLedger:   adaC1 + " | evt-1 skipped c1",
			wantContacts: []string{"c1 user ada@example.com marker=old"},
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				logged(t, h, "the contact exists", "INFO", map[string]any{"contact_id": "c1", "event_id": "evt-1"})
			},
		},
		{
			name: "create answered existing with policy update releases the pending create and updates",
			setup: func(t *testing.T, h *harness) {
				h.crm.SearchLag = time.Minute
				existingUser(t, h, "usr_old")
			},
			msg:          ev{Campaign: "camp_user"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
			wantCRM:      []string{"find email:ada@example.com xid:usr_8812", "create user ada@example.com", "update c1"},
			wantOutcomes: []string{"camp_user|create_user|updated"},
			wantLedger:   adaC1 + " | evt-1 updated c1",
			wantContacts: []string{"c1 user ada@example.com xid=usr_old marker=old"},
			wantAges:     five,
		},
		{
			name: "known person with policy update: no search",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{ContactID: "c7"})
				h.crm.Seed(domain.Match{ID: "c7", Role: domain.RoleLead, Email: ada})
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c7"},
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|updated"},
			wantLedger:   adaRec + " contact=c7 | evt-1 updated c7",
			wantAges:     five,
		},
		{
			name:         "known person with policy skip: no CRM call at all",
			setup:        func(t *testing.T, h *harness) { seedPerson(t, h, ports.Person{ContactID: "c7"}) },
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"},
			wantOutcomes: []string{"camp_lead|create_lead|skipped"},
			wantLedger:   adaRec + " contact=c7 | evt-1 skipped c7",
			wantAges:     five,
		},
		{
			name: "person known on another connection only is searched",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Connection: "intercom_eu", Email: ada, ContactID: "eu7"})
			},
			msg:          ev{}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   "intercom_eu/ada@example.com: contact=eu7; " + evt1C1,
			wantAges:     five,
		},
		{
			name:         "contact gone: forgotten, counted as a failed attempt and retried",
			setup:        func(t *testing.T, h *harness) { seedPerson(t, h, ports.Person{ContactID: "c7"}) },
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Retry: true, Reason: app.CauseContactGone},
			wantCRM:      []string{"update c7"},
			wantRetries:  []string{"camp_update|contact_gone"},
			wantLedger:   adaRec + " | evt-1 failing failures=1 reason=contact_gone",
			wantContacts: []string{},
		},
		{
			name:         "a person record without a contact or a pending create is searched",
			setup:        seedEvents(ports.EventRecord{ID: "evt-0", Outcome: domain.OutcomeNothing, At: now, CountedBy: seeded}),
			msg:          ev{}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   adaC1 + " | evt-0 nothing | evt-1 created c1",
			wantAges:     five,
		},

		// Creates whose outcome is unknown, this event's own.
		{
			name:         "an uncertain create failure keeps the create pending and counts a failure",
			setup:        func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{Err: lostErr}) },
			msg:          ev{}.msg(),
			want:         retryTrans,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|transient"},
			wantLedger:   adaRec + " pending=evt-1@10:00:15 | evt-1 failing failures=1 reason=transient",
			wantContacts: []string{},
		},
		{
			name:         "a create applied whose response was lost keeps the create pending",
			setup:        func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{LoseResponse: true}) },
			msg:          ev{}.msg(),
			want:         retryTrans,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|transient"},
			wantLedger:   adaRec + " pending=evt-1@10:00:15 | evt-1 failing failures=1 reason=transient",
			wantContacts: []string{"c1 lead ada@example.com marker=evt-1"},
		},
		{
			name:         "a certain create failure releases the pending create and counts a failure",
			setup:        func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{Err: transientErr}) },
			msg:          ev{}.msg(),
			want:         retryTrans,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|transient"},
			wantLedger:   evt1First,
			wantContacts: []string{},
		},
		{
			name: "a create whose not-after passed before it could be sent is not sent: its pending create is released",
			setup: func(_ *testing.T, h *harness) {
				// The worker is held up between recording the pending
				// create and sending it until the not-after has passed.
				h.ledger.Fault = func(op string) error {
					if op == "put" {
						h.clock.Advance(lease)
						h.ledger.Fault = nil
					}
					return nil
				}
			},
			msg:          ev{}.msg(),
			want:         retryTrans,
			wantCRM:      []string{"find email:ada@example.com"},
			wantRetries:  []string{"camp_lead|transient"},
			wantLedger:   evt1First,
			wantContacts: []string{},
		},
		{
			name: "a create not confirmed within its lease is retried, its pending create kept, the error says why",
			setup: func(_ *testing.T, h *harness) {
				faults(h).with("create", func(memory.Call) { h.clock.Advance(lease) },
					memory.Fault{Err: &ports.Error{Op: "create", Kind: ports.Transient, Uncertain: true, Err: context.DeadlineExceeded}})
			},
			msg:          ev{}.msg(),
			want:         retryTrans,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|transient"},
			wantLedger:   adaRec + " pending=evt-1@10:00:15 | evt-1 failing failures=1 reason=transient",
			wantContacts: []string{},
			check: func(t *testing.T, _ *harness, v app.Verdict) {
				if v.Err == nil || !strings.Contains(v.Err.Error(), "not confirmed within its lease") {
					t.Errorf("error: got %v, want it to say the create was not confirmed within its lease", v.Err)
				}
			},
		},

		// Creates whose outcome is unknown, another event's.
		{
			name: "a pending create of another event before its not-after: wait for it, no CRM call, no failure",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(7*time.Second))})
			},
			msg:         ev{}.msg(),
			want:        busyFor(7 * time.Second),
			wantRetries: []string{"camp_lead|person_busy"},
			wantLedger:  adaRec + " pending=evt-0@10:00:12",
		},
		{
			name: "a pending create of another event found by its marker is credited to that event (unreported); this event is skipped",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
				h.crm.Seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: "ada.old@example.com", Marker: "evt-0"})
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"},
			wantCRM:      []string{"find email:ada@example.com marker:evt-0"},
			wantOutcomes: []string{"camp_lead|create_lead|skipped"},
			wantLedger:   adaRec + " contact=c9 | evt-0 created c9 unreported | evt-1 skipped c9",
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				logged(t, h, "resolved a create whose outcome was unknown", "INFO",
					map[string]any{"pending_event_id": "evt-0", "event_id": "evt-1", "contact_id": "c9"})
			},
		},
		{
			name: "a pending create of another event found by its marker; this event updates it",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
				h.crm.Seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, Marker: "evt-0"})
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c9"},
			wantCRM:      []string{"find email:ada@example.com marker:evt-0", "update c9"},
			wantOutcomes: []string{"camp_update|create_lead|updated"},
			wantLedger:   adaRec + " contact=c9 | evt-0 created c9 unreported | evt-1 updated c9",
			wantAges:     five,
		},
		{
			name: "the marked contact wins over an older match by email",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
				h.crm.Seed(
					domain.Match{ID: "u1", Role: domain.RoleUser, Email: ada, CreatedAt: 1},
					domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, CreatedAt: 9, Marker: "evt-0"},
				)
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"},
			wantCRM:      []string{"find email:ada@example.com marker:evt-0"},
			wantOutcomes: []string{"camp_lead|create_lead|skipped"},
			wantLedger:   adaRec + " contact=c9 | evt-0 created c9 unreported | evt-1 skipped c9",
			wantAges:     five,
		},
		{
			name: "a pending lead create not found within the search lag after its not-after: wait, create nothing",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
			},
			msg:         ev{}.msg(),
			want:        awaitingFor(grace + app.DefaultSearchLag - time.Minute),
			wantCRM:     []string{"find email:ada@example.com marker:evt-0"},
			wantRetries: []string{"camp_lead|awaiting_search"},
			wantLedger:  adaRec + " pending=evt-0@09:59:05", // a wait is not a failure
		},
		{
			name: "another contact of the person being visible proves nothing: wait for search all the same",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
				h.crm.Seed(domain.Match{ID: "l9", Role: domain.RoleLead, Email: ada})
			},
			msg:         ev{}.msg(),
			want:        awaitingFor(grace + app.DefaultSearchLag - time.Minute),
			wantCRM:     []string{"find email:ada@example.com marker:evt-0"},
			wantRetries: []string{"camp_lead|awaiting_search"},
			wantLedger:  adaRec + " pending=evt-0@09:59:05",
		},
		{
			name: "a pending lead create not found after not-after plus search lag is dropped: this event creates, logged with both ids",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-grace-app.DefaultSearchLag))})
			},
			msg:          ev{}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com marker:evt-0", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   evt1C1,
			wantContacts: []string{"c1 lead ada@example.com marker=evt-1"},
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				logged(t, h, "was not applied; the person may be created again", "INFO",
					map[string]any{"pending_event_id": "evt-0", "event_id": "evt-1", "proof": "search lag passed"})
			},
		},
		{
			name: "a pending user create with an external id the CRM does not have is proven absent once its commit grace passed",
			setup: func(t *testing.T, h *harness) {
				p := pendingBy("evt-0", now.Add(-grace))
				p.ExternalID = "usr_0"
				seedPerson(t, h, ports.Person{Pending: p})
			},
			msg:          ev{Campaign: "camp_user_email"}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com xid:usr_0 marker:evt-0", "create user ada@example.com"},
			wantOutcomes: []string{"camp_user_email|create_user|created"},
			wantLedger:   evt1C1,
			wantAges:     five,
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				logged(t, h, "was not applied; the person may be created again", "INFO",
					map[string]any{"pending_event_id": "evt-0", "event_id": "evt-1", "proof": "external id lookup"})
			},
		},
		{
			name: "a pending user create with an external id not found within its commit grace: wait for a late commit",
			setup: func(t *testing.T, h *harness) {
				p := pendingBy("evt-0", now.Add(-time.Second))
				p.ExternalID = "usr_0"
				seedPerson(t, h, ports.Person{Pending: p})
			},
			msg:         ev{Campaign: "camp_user"}.msg(),
			want:        awaitingFor(grace - time.Second),
			wantCRM:     []string{"find email:ada@example.com xid:usr_0 marker:evt-0"},
			wantRetries: []string{"camp_user|awaiting_search"},
			wantLedger:  adaRec + " pending=evt-0@10:00:04/xid=usr_0",
		},
		{
			name:        "a pending create without an external id holds back a user event until the search lag passes",
			setup:       func(t *testing.T, h *harness) { seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now)}) },
			msg:         ev{Campaign: "camp_user_email"}.msg(),
			want:        awaitingFor(grace + app.DefaultSearchLag),
			wantCRM:     []string{"find email:ada@example.com marker:evt-0"},
			wantRetries: []string{"camp_user_email|awaiting_search"},
			wantLedger:  adaRec + " pending=evt-0@10:00:05",
		},
		{
			name: "a search failure while resolving another event's create counts as this event's failure",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
				faults(h).on("find", 0, memory.Fault{Err: transientErr})
			},
			msg:         ev{}.msg(),
			want:        retryTrans,
			wantCRM:     []string{"find email:ada@example.com marker:evt-0"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  adaRec + " pending=evt-0@09:59:05 | evt-1 failing failures=1 reason=transient",
		},

		// CRM failures.
		{
			name:        "a transient search failure is retried and counted",
			setup:       func(_ *testing.T, h *harness) { faults(h).on("find", 0, memory.Fault{Err: transientErr}) },
			msg:         ev{}.msg(),
			want:        retryTrans,
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  evt1First,
		},
		{
			name: "a rate limited search is a wait until the CRM's window: no failure recorded, nothing written",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 0, memory.Fault{Err: &ports.Error{Op: "search", Kind: ports.RateLimited, Status: 429, RetryAfter: 30 * time.Second}})
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Wait: true, Reason: app.CauseRateLimited, Delay: 30 * time.Second},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|rate_limited"},
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				if _, w := h.ledger.Ops(); w != 0 {
					t.Errorf("ledger writes: got %d, want 0", w)
				}
			},
		},
		{
			name: "a rate limited create is a wait that releases its pending create: not sent, no failure",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("create", 0, memory.Fault{Err: &ports.Error{Op: "create", Kind: ports.RateLimited, RetryAfter: 2 * time.Second}})
			},
			msg:          ev{}.msg(),
			want:         app.Verdict{Retry: true, Wait: true, Reason: app.CauseRateLimited, Delay: 2 * time.Second},
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|rate_limited"},
			wantLedger:   adaRec,
			wantContacts: []string{},
		},
		{
			name: "an unclassified error is retried as transient",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 0, memory.Fault{Err: errors.New("connection reset")})
			},
			msg:         ev{}.msg(),
			want:        retryTrans,
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  evt1First,
		},
		{
			name: "unauthorized before the last failed attempt is retried",
			setup: func(t *testing.T, h *harness) {
				seedEvents(failing(maxAttempts-2, app.CauseTransient))(t, h)
				faults(h).on("find", 0, memory.Fault{Err: crmErr(ports.Unauthorized)})
			},
			msg:         ev{}.at(2),
			want:        app.Verdict{Retry: true, Reason: app.CauseUnauthorized},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|unauthorized"},
			wantLedger:  adaRec + " | evt-1 failing failures=2 reason=unauthorized",
		},
		{
			name:         "a permanent error on create is dead-lettered as crm_rejected, recorded, its pending create released",
			setup:        func(_ *testing.T, h *harness) { faults(h).on("create", 0, memory.Fault{Err: crmErr(ports.Permanent)}) },
			msg:          ev{}.msg(),
			want:         deadReject,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantLedger:   adaRec + " | evt-1 dead_lettered reason=crm_rejected",
		},
		{
			name: "a permanent error on update is dead-lettered as crm_rejected",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{ContactID: "c7"})
				faults(h).on("update", 0, memory.Fault{Err: crmErr(ports.Permanent)})
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         deadReject,
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected},
			wantLedger:   adaRec + " contact=c7 | evt-1 dead_lettered reason=crm_rejected",
		},
		{
			name: "a transient error at the last failed attempt is dead-lettered as attempts_exhausted and recorded",
			setup: func(t *testing.T, h *harness) {
				seedEvents(failing(maxAttempts-1, app.CauseTransient))(t, h)
				faults(h).on("create", 0, memory.Fault{Err: transientErr})
			},
			msg:          ev{}.msg(),
			want:         deadExhaust,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=3 reason=attempts_exhausted",
		},
		{
			name:         "an event whose failures reached MaxAttempts is dead-lettered on its next delivery, with no CRM call",
			setup:        seedEvents(failing(maxAttempts, app.CauseTransient)),
			msg:          ev{}.msg(),
			want:         deadExhaust,
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=3 reason=attempts_exhausted",
		},
		{
			name: "unauthorized at the last failed attempt is dead-lettered as unauthorized",
			setup: func(t *testing.T, h *harness) {
				seedEvents(failing(maxAttempts-1, app.CauseTransient))(t, h)
				faults(h).on("find", 0, memory.Fault{Err: crmErr(ports.Unauthorized)})
			},
			msg:          ev{}.at(maxAttempts),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonUnauthorized},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|unauthorized"},
			wantDead:     []string{app.ReasonUnauthorized},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=3 reason=unauthorized",
		},
		{
			name: "contact gone at the last failed attempt is dead-lettered as attempts_exhausted",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{ContactID: "c7", Events: []ports.EventRecord{failing(maxAttempts-1, app.CauseTransient)}})
			},
			msg:          ev{Campaign: "camp_update"}.msg(),
			want:         deadExhaust,
			wantCRM:      []string{"update c7"},
			wantOutcomes: []string{"camp_update|create_lead|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=3 reason=attempts_exhausted",
		},
		{
			name: "out of attempts with its own create unresolved: retried, not dead-lettered (the create may have been applied)",
			setup: func(t *testing.T, h *harness) {
				seedEvents(failing(maxAttempts-1, app.CauseTransient))(t, h)
				faults(h).on("create", 0, memory.Fault{LoseResponse: true})
			},
			msg:          ev{}.msg(),
			want:         retryTrans,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|transient"},
			wantLedger:   adaRec + " pending=evt-1@10:00:15 | evt-1 failing failures=3 reason=transient",
			wantContacts: []string{"c1 lead ada@example.com marker=evt-1"},
		},
		{
			name: "many deliveries without a failure are not dead-lettered: only failed attempts count",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 0, memory.Fault{Err: transientErr})
			},
			msg:         ev{}.at(1000),
			want:        retryTrans,
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|transient"},
			wantLedger:  evt1First,
		},

		// The ledger.
		{
			name:         "a settled event is a duplicate with one ledger read and no CRM call",
			setup:        seedEvents(ports.EventRecord{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c1", At: now, CountedBy: seeded}),
			msg:          ev{}.msg(),
			want:         dupC1,
			wantOutcomes: []string{"camp_lead|create_lead|duplicate"},
			wantLedger:   adaRec + " | evt-1 created c1",
		},
		{
			name: "a settled event is a duplicate even while another event's create is pending",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(time.Second)),
					Events: []ports.EventRecord{{ID: "evt-1", Outcome: domain.OutcomeSkipped, ContactID: "c1", At: now, CountedBy: seeded}}})
			},
			msg:          ev{}.msg(),
			want:         dupC1,
			wantOutcomes: []string{"camp_lead|create_lead|duplicate"},
			wantLedger:   adaRec + " pending=evt-0@10:00:06 | evt-1 skipped c1",
		},
		{
			name:         "a dead-lettered event's redelivery is a duplicate with no CRM call",
			setup:        seedEvents(ports.EventRecord{ID: "evt-1", Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonCRMRejected, At: now, CountedBy: seeded}),
			msg:          ev{}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDuplicate},
			wantOutcomes: []string{"camp_lead|create_lead|duplicate"},
			wantLedger:   adaRec + " | evt-1 dead_lettered reason=crm_rejected",
		},
		{
			name: "another id for the same person is not a duplicate",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{ContactID: "c1", Events: []ports.EventRecord{{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c1", At: now, CountedBy: seeded}}})
			},
			msg:          ev{ID: "evt-2"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"},
			wantOutcomes: []string{"camp_lead|create_lead|skipped"},
			wantLedger:   evt1C1 + " | evt-2 skipped c1",
			wantAges:     five,
		},
		{
			name: "the same event id on another connection is another event",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Connection: "intercom_eu", Email: ada, ContactID: "c1",
					Events: []ports.EventRecord{{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c1", At: now, CountedBy: seeded}}})
			},
			msg:          ev{}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   "intercom_eu/ada@example.com: contact=c1 | evt-1 created c1; " + evt1C1,
			wantAges:     five,
		},
		{
			name:        "a ledger read failure is a wait, with no CRM call",
			setup:       func(_ *testing.T, h *harness) { failLedger(h, "person", 0) },
			msg:         ev{}.msg(),
			want:        waitLedger,
			wantRetries: []string{"camp_lead|ledger"},
		},
		{
			name:        "a failure to record the pending create is a wait, and nothing is created",
			setup:       func(_ *testing.T, h *harness) { failLedger(h, "put", 1) },
			msg:         ev{}.msg(),
			want:        waitLedger,
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
		},
		{
			name:         "a failure to record the outcome after a create is a wait; the pending create stays for the redelivery",
			setup:        func(_ *testing.T, h *harness) { failLedger(h, "put", 2, 3, 4, 5, 6, 7, 8, 9, 10) },
			msg:          ev{}.msg(),
			want:         waitLedger,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries:  []string{"camp_lead|ledger"},
			wantLedger:   adaRec + " pending=evt-1@10:00:15",
			wantContacts: []string{"c1 lead ada@example.com marker=evt-1"},
		},
		{
			name: "a failure to record a failed attempt is a wait, logged",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 0, memory.Fault{Err: transientErr})
				failLedger(h, "put", 0)
			},
			msg:         ev{}.msg(),
			want:        waitLedger,
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
			check: func(t *testing.T, h *harness, v app.Verdict) {
				logged(t, h, "recording a failed attempt failed", "WARN", map[string]any{"event_id": "evt-1"})
				if !errors.Is(v.Err, transientErr) || !errors.Is(v.Err, errKV) {
					t.Errorf("error: got %v, want both the CRM's and the ledger's", v.Err)
				}
			},
		},
		{
			name: "a dead letter whose record cannot be written is a wait, not counted: the redelivery dead-letters it again",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("create", 0, memory.Fault{Err: crmErr(ports.Permanent)})
				failLedger(h, "put", 2, 3, 4, 5, 6, 7, 8, 9, 10)
			},
			msg:         ev{}.msg(),
			want:        waitLedger,
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|ledger"},
			wantDead:    []string{app.ReasonCRMRejected},
			wantLedger:  adaRec + " pending=evt-1@10:00:15",
			check: func(t *testing.T, h *harness, _ app.Verdict) {
				logged(t, h, "recording a dead letter failed", "WARN", map[string]any{"event_id": "evt-1"})
			},
		},

		// The last delivery the server will make.
		{
			name: "a failed attempt on the last delivery is dead-lettered as deliveries_exhausted and recorded",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 0, memory.Fault{Err: transientErr})
			},
			msg:          lastDelivery(ev{}.at(9)),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonDeliveriesExhausted},
			wantCRM:      []string{"find email:ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|deliveries_exhausted"},
			wantDead:     []string{app.ReasonDeliveriesExhausted},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=1 reason=deliveries_exhausted",
		},
		{
			name: "a wait on the last delivery is dead-lettered as deliveries_exhausted, never dropped",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(time.Second))})
			},
			msg:          lastDelivery(ev{}.at(9)),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonDeliveriesExhausted},
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|deliveries_exhausted"},
			wantDead:     []string{app.ReasonDeliveriesExhausted},
			wantLedger:   adaRec + " pending=evt-0@10:00:06 | evt-1 dead_lettered reason=deliveries_exhausted",
			check: func(t *testing.T, _ *harness, v app.Verdict) {
				if v.Err == nil || !strings.Contains(v.Err.Error(), "person_busy") {
					t.Errorf("error: got %v, want it to name the last cause", v.Err)
				}
			},
		},
		{
			name:         "a settled outcome on the last delivery is counted as usual",
			msg:          lastDelivery(ev{}.at(9)),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"camp_lead|create_lead|created"},
			wantLedger:   evt1C1,
			wantAges:     five,
		},

		// Campaign settings.
		{
			name:         "unknown campaign without a default is unconfigured, without the ledger",
			msg:          ev{Campaign: "camp_new"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeUnconfigured},
			wantOutcomes: []string{"_unconfigured||unconfigured"},
			wantAges:     five,
		},
		{
			name: "unknown campaign with a default uses it under a bounded label",
			setup: withCatalog(func(c *domain.Catalog) {
				c.Default = &domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead,
					OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{emailField}}
			}),
			msg:          ev{Campaign: "camp_new"}.msg(),
			want:         createdC1,
			wantCRM:      []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantOutcomes: []string{"_unconfigured|create_lead|created"},
			wantLedger:   evt1C1,
			wantAges:     five,
		},
		{
			name:         "action nothing settles without the ledger or the CRM",
			msg:          ev{Campaign: "camp_nothing"}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes: []string{"camp_nothing|nothing|nothing"},
			wantAges:     five,
		},
		{
			name:        "a connection without a CRM is a wait, at any delivery",
			setup:       withCatalog(hub),
			msg:         ev{Campaign: "camp_hub"}.at(1000),
			want:        app.Verdict{Retry: true, Wait: true, Reason: app.CauseNoCRM},
			wantRetries: []string{"camp_hub|no_crm"},
		},
		{
			name:         "a connection without a CRM on the last delivery is dead-lettered as deliveries_exhausted",
			setup:        withCatalog(hub),
			msg:          lastDelivery(ev{Campaign: "camp_hub"}.at(9)),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonDeliveriesExhausted},
			wantOutcomes: []string{"camp_hub|create_lead|dead_lettered|deliveries_exhausted"},
			wantDead:     []string{app.ReasonDeliveriesExhausted},
			wantLedger:   "hubspot/ada@example.com: | evt-1 dead_lettered reason=deliveries_exhausted",
		},

		// Invalid events.
		invalidCase("malformed JSON", []byte(`{"specversion":"1.0",`), domain.ReasonMalformed, "", "", app.LabelUnknown),
		invalidCase("wrong type", []byte(strings.Replace(string(ev{}.body()), `"type":"referrer.joined"`, `"type":"referrer.left"`, 1)),
			domain.ReasonWrongType, "evt-1", "camp_lead", "camp_lead"),
		invalidCase("missing id", ev{ID: "  "}.body(), domain.ReasonMissingID, "", "camp_lead", "camp_lead"),
		invalidCase("missing email", ev{Email: " "}.body(), domain.ReasonMissingEmail, "evt-1", "camp_lead", "camp_lead"),
		invalidCase("invalid email", ev{Email: "ada(at)example.com"}.body(), domain.ReasonInvalidEmail, "evt-1", "camp_lead", "camp_lead"),
		invalidCase("invalid email of an unlisted campaign", ev{Campaign: "camp_new", Email: "ada(at)"}.body(), domain.ReasonInvalidEmail,
			"evt-1", "camp_new", app.LabelUnconfigured),
		invalidCase("oversized", append(ev{}.body(), strings.Repeat(" ", domain.MaxEventSize)...), domain.ReasonTooLarge, "", "", app.LabelUnknown),
		invalidCase("missing campaign", ev{Campaign: " "}.body(), domain.ReasonMissingCampaign, "evt-1", "", app.LabelUnknown),
		{
			name:         "mapping error is dead-lettered under its campaign, without the ledger",
			msg:          ev{Campaign: "camp_badmap", Meta: map[string]any{"opt_out": "maybe"}}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: domain.ReasonMapping},
			wantOutcomes: []string{"camp_badmap|create_lead|dead_lettered|mapping"},
			wantDead:     []string{domain.ReasonMapping},
		},

		// Dead-letter failures.
		{
			name: "dead-letter store failure is a wait, not counted",
			setup: func(_ *testing.T, h *harness) {
				h.dlq.Fault = func(ports.DeadLetter) error { return errors.New("stream unavailable") }
			},
			msg:         delivery([]byte(`{`), 1),
			want:        app.Verdict{Retry: true, Wait: true, Reason: app.CauseDeadLetterFailed},
			wantRetries: []string{"_unknown|dead_letter_failed"},
		},
		{
			name: "dead-letter store failure after a CRM rejection is retried, not counted, nothing recorded",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("create", 0, memory.Fault{Err: crmErr(ports.Permanent)})
				h.dlq.Fault = func(ports.DeadLetter) error { return errors.New("stream unavailable") }
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Wait: true, Reason: app.CauseDeadLetterFailed},
			wantCRM:     []string{"find email:ada@example.com", "create lead ada@example.com"},
			wantRetries: []string{"camp_lead|dead_letter_failed"},
			wantLedger:  adaRec + " pending=evt-1@10:00:15",
		},
		{
			name: "dead-letter store failure at the last failed attempt is retried, the failure kept: the redelivery gives up at once",
			setup: func(t *testing.T, h *harness) {
				seedEvents(failing(maxAttempts-1, app.CauseTransient))(t, h)
				faults(h).on("find", 0, memory.Fault{Err: transientErr})
				h.dlq.Fault = func(ports.DeadLetter) error { return errors.New("stream unavailable") }
			},
			msg:         ev{}.msg(),
			want:        app.Verdict{Retry: true, Wait: true, Reason: app.CauseDeadLetterFailed},
			wantCRM:     []string{"find email:ada@example.com"},
			wantRetries: []string{"camp_lead|dead_letter_failed"},
			wantLedger:  adaRec + " | evt-1 failing failures=3 reason=transient",
		},

		// Event age.
		{
			name:         "an event without a time is aged from its publication",
			msg:          ev{Campaign: "camp_nothing", NoTime: true}.msg(),
			want:         app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes: []string{"camp_nothing|nothing|nothing"},
			wantAges:     []time.Duration{time.Second},
		},
		{
			name: "an event without any time is not aged",
			msg: func() app.Message {
				m := ev{Campaign: "camp_nothing", NoTime: true}.msg()
				m.Published = time.Time{}
				return m
			}(),
			want:         app.Verdict{Outcome: domain.OutcomeNothing},
			wantOutcomes: []string{"camp_nothing|nothing|nothing"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			h.crm.Reset()
			got := h.svc.Handle(context.Background(), tt.msg)

			checkVerdict(t, got, tt.want)
			countedOnce(t, nil, h, got)
			checkIdentified(t, got, tt.msg)
			equalList(t, "CRM calls", callsOf(h.crm), tt.wantCRM)
			equalList(t, "other connection's CRM calls", callsOf(h.crmEU), nil)
			equalList(t, "outcomes", outcomeStrings(h.metrics.Outcomes()), tt.wantOutcomes)
			equalList(t, "retries", h.metrics.Retries(), tt.wantRetries)
			equalList(t, "dead letters", deadReasons(h.dlq), tt.wantDead)
			equalList(t, "event ages", h.metrics.EventAges(), tt.wantAges)
			if got := ledgerState(h.ledger); got != tt.wantLedger {
				t.Errorf("ledger:\n got %q\nwant %q", got, tt.wantLedger)
			}
			if tt.wantContacts != nil {
				equalList(t, "contacts", contactsOf(h.crm), tt.wantContacts)
			}
			if !got.Retry && got.Outcome != domain.OutcomeDeadLettered {
				if p := h.metrics.ProcessedTimes(); len(p) != 1 || p[0] < 0 {
					t.Errorf("processing times: got %v, want one, not negative", p)
				}
			}
			if tt.check != nil {
				tt.check(t, h, got)
			}
		})
	}
}

// existingUser stores Ada as a user the CRM's search does not show yet
// (SearchLag must be set): a create of her answers that she exists.
func existingUser(t *testing.T, h *harness, xid string) {
	t.Helper()
	res, err := h.crm.Create(context.Background(), domain.Contact{Role: domain.RoleUser, Email: ada, ExternalID: xid, Marker: "old"})
	if err != nil || res.Existing {
		t.Fatalf("seed user: got %+v, %v", res, err)
	}
}

// lastDelivery marks m as the last delivery the server will make.
func lastDelivery(m app.Message) app.Message {
	m.LastDelivery = true
	return m
}

// invalidCase is a TestHandle case for an event that can never be
// processed: dead-lettered under its campaign's label when the campaign
// was readable (the unknown label when not), naming the event id and
// campaign when they were readable, the ledger untouched.
func invalidCase(name string, body []byte, reason, eventID, campaign, label string) handleCase {
	return handleCase{
		name:         "invalid event: " + name,
		msg:          delivery(body, 1),
		want:         app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: reason},
		wantOutcomes: []string{label + "||dead_lettered|" + reason},
		wantDead:     []string{reason},
		check: func(t *testing.T, h *harness, v app.Verdict) {
			if r, w := h.ledger.Ops(); r+w != 0 {
				t.Errorf("ledger operations: got %d reads %d writes, want none", r, w)
			}
			if v.EventID != eventID || v.Campaign != campaign {
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

	wantContacts []string
	wantLedger   string
	wantOutcomes []string
	wantDead     []string
}

// replayOf is the message an operator's replay of dead letter dl sends.
func replayOf(m app.Message, dl string) app.Message {
	m.Headers = map[string]string{"nats-msg-id": "m-1", app.ReplayedFromHeader: dl}
	return m
}

func TestRedeliveries(t *testing.T) {
	advance := func(d time.Duration) func(*testing.T, *harness) {
		return func(_ *testing.T, h *harness) { h.clock.Advance(d) }
	}
	ledgerIs := func(want string) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) {
			t.Helper()
			if got := ledgerState(h.ledger); got != want {
				t.Errorf("ledger:\n got %q\nwant %q", got, want)
			}
		}
	}
	lost := func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{LoseResponse: true}) }
	findFails := func(_ *testing.T, h *harness) { faults(h).on("find", 0, memory.Fault{Err: transientErr}) }
	findWorks := func(_ *testing.T, h *harness) { h.crm.Fault = nil }
	const (
		findAda       = "find email:ada@example.com"
		findAdaMarked = "find email:ada@example.com marker:evt-1"
		findEvt0      = "find email:ada@example.com marker:evt-0"
		createLead    = "create lead ada@example.com"
		createUser    = "create user ada@example.com"
		leadC1        = "c1 lead ada@example.com marker=evt-1"
		pendingEvt1   = adaRec + " pending=evt-1@10:00:15 | evt-1 failing failures=1 reason=transient"
		createdEvt1   = adaC1 + " | evt-1 created c1 failures=1 reason=transient"
	)
	tests := []scenario{
		{
			name:  "the creating event's redelivery before its not-after waits for its own create",
			setup: lost,
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}, check: ledgerIs(pendingEvt1)},
				{before: advance(4 * time.Second), msg: ev{}.at(2), want: busyFor(6 * time.Second), check: ledgerIs(pendingEvt1)},
				{before: advance(6 * time.Second), msg: ev{}.at(3), want: createdC1, wantCRM: []string{findAdaMarked}},
				{msg: ev{}.at(4), want: dupC1},
			},
			wantContacts: []string{leadC1},
			wantLedger:   createdEvt1,
			wantOutcomes: []string{"camp_lead|create_lead|created", "camp_lead|create_lead|duplicate"},
		},
		{
			name: "a lead whose create may have been applied waits out the search lag from its not-after, then is found by its marker",
			setup: func(t *testing.T, h *harness) {
				h.crm.SearchLag = 2 * time.Minute
				lost(t, h)
			},
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}},
				{before: advance(time.Minute), msg: ev{}.at(2), want: awaitingFor(app.DefaultSearchLag - time.Minute + lease + grace),
					wantCRM: []string{findAdaMarked}, check: ledgerIs(pendingEvt1)},
				{before: advance(time.Minute), msg: ev{}.at(3), want: createdC1, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   createdEvt1,
			wantOutcomes: []string{"camp_lead|create_lead|created"},
		},
		{
			name: "a lead create that committed after its client gave up is found within the search lag: one contact",
			setup: func(_ *testing.T, h *harness) {
				h.crm.SearchLag = time.Minute
				// It lands 4m05s after it was sent and is searchable a
				// minute later, at 10:05:10: after the search lag counted
				// from when it was sent (10:05:05), before the commit
				// grace and the lag counted from its not-after (10:05:45).
				faults(h).on("create", 1, memory.Fault{CommitAfter: 4*time.Minute + 5*time.Second})
			},
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}},
				{before: advance(2 * time.Minute), msg: ev{}.at(2), want: awaitingFor(3*time.Minute + lease + grace), wantCRM: []string{findAdaMarked}},
				{before: advance(3 * time.Minute), msg: ev{}.at(3), want: awaitingFor(lease + grace), wantCRM: []string{findAdaMarked},
					check: func(t *testing.T, h *harness) {
						if got := contactsOf(h.crm); len(got) != 1 {
							t.Errorf("contacts: got %q, want the late create landed", got)
						}
					}},
				{before: advance(lease + grace), msg: ev{}.at(4), want: createdC1, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   createdEvt1,
			wantOutcomes: []string{"camp_lead|create_lead|created"},
		},
		{
			name:  "a lead whose create was not applied is created again once the search lag has passed since its not-after",
			setup: func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{Err: lostErr}) },
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}},
				{before: advance(lease + grace + app.DefaultSearchLag - time.Millisecond), msg: ev{}.at(2), want: awaitingFor(time.Millisecond),
					wantCRM: []string{findAdaMarked}},
				{before: advance(time.Millisecond), msg: ev{}.at(3), want: createdC1, wantCRM: []string{findAdaMarked, createLead},
					check: func(t *testing.T, h *harness) {
						logged(t, h, "was not applied", "INFO", map[string]any{"pending_event_id": "evt-1", "event_id": "evt-1"})
					}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   adaC1 + " | evt-1 created c1 failures=1", // settled by its own create: the last failure's cause is gone,
			wantOutcomes: []string{"camp_lead|create_lead|created"},
		},
		{
			name: "a user known by email only whose create may have been applied waits for search, then finds its own create",
			setup: func(t *testing.T, h *harness) {
				h.crm.SearchLag = 2 * time.Minute
				lost(t, h)
			},
			steps: []step{
				{msg: ev{Campaign: "camp_user_email"}.msg(), want: retryTrans, wantCRM: []string{findAda, createUser}},
				{before: advance(lease), msg: ev{Campaign: "camp_user_email"}.at(2), want: awaitingFor(grace + app.DefaultSearchLag),
					wantCRM: []string{findAdaMarked}},
				{before: advance(2 * time.Minute), msg: ev{Campaign: "camp_user_email"}.at(3), want: createdC1, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{"c1 user ada@example.com marker=evt-1"},
			wantLedger:   createdEvt1,
			wantOutcomes: []string{"camp_user_email|create_user|created"},
		},
		{
			name: "a user with an external id whose create was applied is found by it at once, even while search lags",
			setup: func(t *testing.T, h *harness) {
				h.crm.SearchLag = 2 * time.Minute
				lost(t, h)
			},
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: retryTrans, wantCRM: []string{"find email:ada@example.com xid:usr_8812", createUser}},
				{before: advance(lease), msg: ev{Campaign: "camp_user"}.at(2), want: createdC1,
					wantCRM: []string{"find email:ada@example.com xid:usr_8812 marker:evt-1"}},
			},
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-1"},
			wantLedger:   createdEvt1,
			wantOutcomes: []string{"camp_user|create_user|created"},
		},
		{
			name:  "a user with an external id whose create was not applied is created again once its commit grace passed",
			setup: func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{Err: lostErr}) },
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: retryTrans, wantCRM: []string{"find email:ada@example.com xid:usr_8812", createUser}},
				{before: advance(lease), msg: ev{Campaign: "camp_user"}.at(2), want: awaitingFor(grace),
					wantCRM: []string{"find email:ada@example.com xid:usr_8812 marker:evt-1"}},
				{before: advance(grace), msg: ev{Campaign: "camp_user"}.at(3), want: createdC1,
					wantCRM: []string{"find email:ada@example.com xid:usr_8812 marker:evt-1", createUser}},
			},
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-1"},
			wantLedger:   adaC1 + " | evt-1 created c1 failures=1", // settled by its own create: the last failure's cause is gone,
			wantOutcomes: []string{"camp_user|create_user|created"},
		},
		{
			name:  "another event settles a lost create for the creating event; that event's redelivery counts it created once",
			setup: lost,
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}},
				{before: advance(lease), msg: ev{ID: "evt-2", Campaign: "camp_update"}.msg(), want: app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
					wantCRM: []string{findAdaMarked, "update c1"},
					check:   ledgerIs(adaC1 + " | evt-1 created c1 failures=1 reason=transient unreported | evt-2 updated c1")},
				{msg: ev{}.at(2), want: createdC1,
					check: ledgerIs(adaC1 + " | evt-2 updated c1 | evt-1 created c1 failures=1 reason=transient")},
				{msg: ev{}.at(3), want: dupC1},
			},
			wantContacts: []string{leadC1},
			wantLedger:   adaC1 + " | evt-2 updated c1 | evt-1 created c1 failures=1 reason=transient",
			wantOutcomes: []string{"camp_update|create_lead|updated", "camp_lead|create_lead|created", "camp_lead|create_lead|duplicate"},
		},
		{
			name:  "another event creates a user whose earlier create was proven not applied; the earlier event then updates it",
			setup: func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{Err: lostErr}) },
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: retryTrans, wantCRM: []string{"find email:ada@example.com xid:usr_8812", createUser}},
				{before: advance(lease + grace), msg: ev{ID: "evt-2", Campaign: "camp_user"}.msg(), want: createdC1,
					wantCRM: []string{"find email:ada@example.com xid:usr_8812 marker:evt-1", createUser}},
				{msg: ev{Campaign: "camp_user"}.at(2), want: app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c1"},
					wantCRM: []string{"update c1"}},
			},
			wantContacts: []string{"c1 user ada@example.com xid=usr_8812 marker=evt-2"},
			wantLedger:   adaC1 + " | evt-2 created c1 | evt-1 updated c1 failures=1",
			wantOutcomes: []string{"camp_user|create_user|created", "camp_user|create_user|updated"},
		},
		{
			name: "a pending create of another event that cannot be recorded stays pending for the next delivery",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(-time.Minute))})
				h.crm.Seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, Marker: "evt-0"})
				failLedger(h, "put", 0)
			},
			steps: []step{
				{msg: ev{}.msg(), want: waitLedger, wantCRM: []string{findEvt0}, check: ledgerIs(adaRec + " pending=evt-0@09:59:05")},
				{before: func(_ *testing.T, h *harness) { h.ledger.Fault = nil },
					msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"}, wantCRM: []string{findEvt0}},
				{msg: lastDelivery(ev{ID: "evt-0"}.at(5)), want: app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c9"}},
			},
			wantContacts: []string{"c9 lead ada@example.com marker=evt-0"},
			wantLedger:   adaRec + " contact=c9 | evt-1 skipped c9 | evt-0 created c9",
			wantOutcomes: []string{"camp_lead|create_lead|skipped", "camp_lead|create_lead|created"},
		},
		{
			name: "a result that could not be recorded is not created again: the redelivery finds its own create",
			setup: func(_ *testing.T, h *harness) {
				failLedger(h, "put", 2, 3, 4, 5, 6, 7, 8, 9, 10)
			},
			steps: []step{
				{msg: ev{}.msg(), want: waitLedger, wantCRM: []string{findAda, createLead}, check: ledgerIs(adaRec + " pending=evt-1@10:00:15")},
				{before: func(_ *testing.T, h *harness) { h.ledger.Fault = nil; h.clock.Advance(lease) },
					msg: ev{}.at(2), want: createdC1, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   evt1C1,
			wantOutcomes: []string{"camp_lead|create_lead|created"},
		},
		{
			name:  "a contact gone from the CRM is searched afresh by the redelivery",
			setup: func(t *testing.T, h *harness) { seedPerson(t, h, ports.Person{ContactID: "c7"}) },
			steps: []step{
				{msg: ev{Campaign: "camp_update"}.msg(), want: app.Verdict{Retry: true, Reason: app.CauseContactGone}, wantCRM: []string{"update c7"}},
				{msg: ev{Campaign: "camp_update"}.at(2), want: createdC1, wantCRM: []string{findAda, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   adaC1 + " | evt-1 created c1 failures=1",
			wantOutcomes: []string{"camp_update|create_lead|created"},
		},
		{
			name:     "failures are counted in the ledger across deliveries and replicas, and dead-lettered at MaxAttempts",
			replicas: 1,
			setup:    findFails,
			steps: []step{
				// Every delivery is a first delivery (a republish, say):
				// only the ledger knows how often the event failed.
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda}, check: ledgerIs(evt1First)},
				{before: advance(time.Minute), replica: 1, msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda},
					check: ledgerIs(adaRec + " | evt-1 failing failures=2 reason=transient")},
				{before: advance(time.Minute), msg: ev{}.msg(), want: deadExhaust, wantCRM: []string{findAda},
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
						if want := "gave up after 3 failed attempts"; !strings.Contains(d.Message, want) {
							t.Errorf("dead letter message: got %q, want it to contain %q", d.Message, want)
						}
					}},
				// Terminal: a redelivery is a duplicate, with no CRM call.
				{before: findWorks, replica: 1, msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeDuplicate}},
			},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=3 reason=attempts_exhausted",
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|attempts_exhausted", "camp_lead|create_lead|duplicate"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
		},
		{
			name: "waiting for a busy person is not a failure, and comes back when its not-after ends",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now.Add(lease))})
			},
			steps: []step{
				{msg: ev{}.at(1), want: busyFor(10 * time.Second), check: ledgerIs(adaRec + " pending=evt-0@10:00:15")},
				{before: advance(3 * time.Second), msg: ev{}.at(2), want: busyFor(7 * time.Second)},
				{before: advance(7*time.Second - time.Millisecond), msg: ev{}.at(3), want: busyFor(time.Millisecond),
					check: ledgerIs(adaRec + " pending=evt-0@10:00:15")},
				{before: func(_ *testing.T, h *harness) {
					h.clock.Advance(time.Millisecond)
					h.crm.Seed(domain.Match{ID: "c9", Role: domain.RoleLead, Email: ada, Marker: "evt-0"})
				}, msg: ev{}.at(4), want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c9"}, wantCRM: []string{findEvt0}},
			},
			wantContacts: []string{"c9 lead ada@example.com marker=evt-0"},
			wantLedger:   adaRec + " contact=c9 | evt-0 created c9 unreported | evt-1 skipped c9",
			wantOutcomes: []string{"camp_lead|create_lead|skipped"},
		},
		{
			name:  "waiting for search is not a failure",
			setup: func(t *testing.T, h *harness) { seedPerson(t, h, ports.Person{Pending: pendingBy("evt-0", now)}) },
			steps: []step{
				{msg: ev{}.at(1), want: awaitingFor(grace + 5*time.Minute), wantCRM: []string{findEvt0}},
				{before: advance(time.Minute), msg: ev{}.at(2), want: awaitingFor(grace + 4*time.Minute), wantCRM: []string{findEvt0}},
				{before: advance(time.Minute), msg: ev{}.at(3), want: awaitingFor(grace + 3*time.Minute), wantCRM: []string{findEvt0}},
				{before: advance(time.Minute), msg: ev{}.at(4), want: awaitingFor(grace + 2*time.Minute), wantCRM: []string{findEvt0},
					check: ledgerIs(adaRec + " pending=evt-0@10:00:05")},
				{before: advance(2 * time.Minute), msg: ev{}.at(5), want: awaitingFor(grace), wantCRM: []string{findEvt0}},
				{before: advance(grace), msg: ev{}.at(6), want: createdC1, wantCRM: []string{findEvt0, createLead}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   evt1C1,
			wantOutcomes: []string{"camp_lead|create_lead|created"},
		},
		{
			name:  "a replay re-arms a dead-lettered event exactly once per dead letter",
			setup: func(_ *testing.T, h *harness) { faults(h).on("create", 1, memory.Fault{Err: crmErr(ports.Permanent)}) },
			steps: []step{
				{msg: ev{}.msg(), want: deadReject, wantCRM: []string{findAda, createLead},
					check: ledgerIs(adaRec + " | evt-1 dead_lettered reason=crm_rejected")},
				// A plain redelivery does not re-arm it.
				{msg: ev{}.at(2), want: app.Verdict{Outcome: domain.OutcomeDuplicate}},
				// The operator's replay, while the CRM still fails once:
				// a fresh start, not a further failure.
				{before: findFails, msg: replayOf(ev{}.msg(), "dlq-7"), want: retryTrans, wantCRM: []string{findAda},
					check: func(t *testing.T, h *harness) {
						ledgerIs(evt1First+" replayed=dlq-7")(t, h)
						logged(t, h, "re-arms its event", "INFO", map[string]any{"event_id": "evt-1", "replayed_from": "dlq-7"})
					}},
				{before: func(_ *testing.T, h *harness) {
					h.crm.Fault = nil
					faults(h).on("create", 1, memory.Fault{Err: crmErr(ports.Permanent)})
				}, msg: replayOf(ev{}.at(2), "dlq-7"), want: deadReject, wantCRM: []string{findAda, createLead},
					check: ledgerIs(adaRec + " | evt-1 dead_lettered failures=1 reason=crm_rejected replayed=dlq-7")},
				// A redelivery of that same replay does not re-arm it again.
				{msg: replayOf(ev{}.at(3), "dlq-7"), want: app.Verdict{Outcome: domain.OutcomeDuplicate}},
				// A replay of the second dead letter does.
				{msg: replayOf(ev{}.msg(), "dlq-9"), want: createdC1, wantCRM: []string{findAda, createLead}},
				{msg: replayOf(ev{}.at(2), "dlq-9"), want: dupC1},
				// A replay of a dead letter of an event that has since
				// been applied changes nothing.
				{msg: replayOf(ev{}.msg(), "dlq-11"), want: dupC1},
			},
			wantContacts: []string{leadC1},
			wantLedger:   adaC1 + " | evt-1 created c1 replayed=dlq-9",
			wantOutcomes: []string{
				"camp_lead|create_lead|dead_lettered|crm_rejected", "camp_lead|create_lead|duplicate",
				"camp_lead|create_lead|dead_lettered|crm_rejected", "camp_lead|create_lead|duplicate",
				"camp_lead|create_lead|created", "camp_lead|create_lead|duplicate", "camp_lead|create_lead|duplicate",
			},
			wantDead: []string{app.ReasonCRMRejected, app.ReasonCRMRejected},
		},
		{
			name:  "a dead letter that could not be recorded is dead-lettered again by the redelivery and counted once, never applied",
			setup: func(_ *testing.T, h *harness) { faults(h).on("create", 0, memory.Fault{Err: crmErr(ports.Permanent)}) },
			steps: []step{
				{before: func(_ *testing.T, h *harness) { failLedger(h, "put", 2, 3, 4, 5, 6, 7, 8, 9) },
					msg: ev{}.msg(), want: waitLedger, wantCRM: []string{findAda, createLead}},
				// Its pending create is still recorded: resolved like any
				// other (a lead's, after the search lag), and the create
				// is refused again.
				{before: func(_ *testing.T, h *harness) { h.ledger.Fault = nil; h.clock.Advance(lease) },
					msg: ev{}.at(2), want: awaitingFor(grace + app.DefaultSearchLag), wantCRM: []string{findAdaMarked}},
				{before: advance(grace + app.DefaultSearchLag), msg: ev{}.at(3), want: deadReject, wantCRM: []string{findAdaMarked, createLead},
					check: ledgerIs(adaRec + " | evt-1 dead_lettered reason=crm_rejected")},
			},
			wantContacts: []string{},
			wantLedger:   adaRec + " | evt-1 dead_lettered reason=crm_rejected",
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|crm_rejected"},
			wantDead:     []string{app.ReasonCRMRejected, app.ReasonCRMRejected},
		},
		{
			name: "out of attempts with its own create unresolved: found applied, it is created, not dead-lettered",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Events: []ports.EventRecord{{ID: "evt-1", Failures: maxAttempts - 1, Reason: app.CauseTransient, At: now}}})
				lost(t, h)
			},
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}},
				{before: advance(lease), msg: ev{}.at(2), want: createdC1, wantCRM: []string{findAdaMarked}},
			},
			wantContacts: []string{leadC1},
			wantLedger:   adaC1 + " | evt-1 created c1 failures=3 reason=transient",
			wantOutcomes: []string{"camp_lead|create_lead|created"},
		},
		{
			name: "out of attempts with its own create unresolved: proven not applied, it is dead-lettered",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{Events: []ports.EventRecord{{ID: "evt-1", Failures: maxAttempts - 1, Reason: app.CauseTransient, At: now}}})
				faults(h).on("create", 1, memory.Fault{Err: lostErr})
			},
			steps: []step{
				{msg: ev{Campaign: "camp_user"}.msg(), want: retryTrans, wantCRM: []string{"find email:ada@example.com xid:usr_8812", createUser}},
				{before: advance(lease + grace), msg: ev{Campaign: "camp_user"}.at(2), want: deadExhaust,
					wantCRM: []string{"find email:ada@example.com xid:usr_8812 marker:evt-1"}},
			},
			wantContacts: []string{},
			wantLedger:   adaRec + " | evt-1 dead_lettered failures=3 reason=attempts_exhausted",
			wantOutcomes: []string{"camp_user|create_user|dead_lettered|attempts_exhausted"},
			wantDead:     []string{app.ReasonAttemptsExhausted},
		},
		{
			// The server will not deliver it again, so it cannot wait for
			// its own create: it is dead-lettered (its create stays
			// pending for whoever comes next). The next event finds the
			// create applied and the record keeps its contact for the
			// dead letter's replay, which counts it created. Applied and
			// dead-lettered until replayed: only past an operator-set
			// delivery limit.
			name:  "on the last delivery with its own create unresolved: dead-lettered; the create found later is credited on replay",
			setup: lost,
			steps: []step{
				{msg: ev{}.msg(), want: retryTrans, wantCRM: []string{findAda, createLead}},
				{msg: lastDelivery(ev{}.at(2)), want: app.Verdict{Outcome: domain.OutcomeDeadLettered, Reason: app.ReasonDeliveriesExhausted},
					check: ledgerIs(adaRec + " pending=evt-1@10:00:15 | evt-1 dead_lettered failures=1 reason=deliveries_exhausted")},
				{before: advance(lease), msg: ev{ID: "evt-2"}.msg(), want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c1"},
					wantCRM: []string{findAdaMarked},
					check:   ledgerIs(adaC1 + " | evt-1 dead_lettered c1 failures=1 reason=deliveries_exhausted | evt-2 skipped c1")},
				{msg: replayOf(ev{}.msg(), "dlq-3"), want: createdC1},
				{msg: replayOf(ev{}.at(2), "dlq-3"), want: dupC1},
			},
			wantContacts: []string{leadC1},
			wantLedger:   adaC1 + " | evt-2 skipped c1 | evt-1 created c1 failures=1 replayed=dlq-3",
			wantOutcomes: []string{"camp_lead|create_lead|dead_lettered|deliveries_exhausted", "camp_lead|create_lead|skipped",
				"camp_lead|create_lead|created", "camp_lead|create_lead|duplicate"},
			wantDead: []string{app.ReasonDeliveriesExhausted},
		},
		{
			name: "a rate limit never burns attempts: many waits, then applied",
			setup: func(_ *testing.T, h *harness) {
				faults(h).on("find", 2*maxAttempts, memory.Fault{Err: &ports.Error{Op: "search", Kind: ports.RateLimited, RetryAfter: time.Second}})
			},
			steps: func() []step {
				var steps []step
				for i := range 2 * maxAttempts {
					steps = append(steps, step{msg: ev{}.at(i + 1), want: app.Verdict{Retry: true, Wait: true, Reason: app.CauseRateLimited, Delay: time.Second},
						wantCRM: []string{findAda}})
				}
				return append(steps, step{msg: ev{}.at(2*maxAttempts + 1), want: createdC1, wantCRM: []string{findAda, createLead}})
			}(),
			wantContacts: []string{leadC1},
			wantLedger:   evt1C1,
			wantOutcomes: []string{"camp_lead|create_lead|created"},
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
				h.crm.Reset()
				before := h.metrics.Outcomes()
				got := svcs[st.replica].Handle(context.Background(), st.msg)
				t.Logf("step %d: %q retry=%v %s %v", i+1, got.Outcome, got.Retry, got.Reason, got.Err)
				checkVerdict(t, got, st.want)
				checkIdentified(t, got, st.msg)
				countedOnce(t, before, h, got)
				equalList(t, "CRM calls", callsOf(h.crm), st.wantCRM)
				if st.check != nil {
					st.check(t, h)
				}
				if t.Failed() {
					t.Fatalf("step %d failed", i+1)
				}
			}
			equalList(t, "contacts", contactsOf(h.crm), tt.wantContacts)
			equalList(t, "outcomes", outcomeStrings(h.metrics.Outcomes()), tt.wantOutcomes)
			equalList(t, "dead letters", deadReasons(h.dlq), tt.wantDead)
			if got := ledgerState(h.ledger); got != tt.wantLedger {
				t.Errorf("ledger:\n got %q\nwant %q", got, tt.wantLedger)
			}
		})
	}
}

// TestKVBudget pins the ledger operations of each path (issue 8's budget):
// a duplicate costs one read; a known person's skip or update one read and
// one write; a new person one read and two writes.
func TestKVBudget(t *testing.T) {
	settledEvt1 := ports.EventRecord{ID: "evt-1", Outcome: domain.OutcomeCreated, ContactID: "c7", At: now, CountedBy: seeded}
	tests := []struct {
		name       string
		person     *ports.Person // Ada's record before, if any
		seed       []domain.Match
		msg        app.Message
		want       domain.Outcome
		reads      int64
		writes     int64
		crmCalls   int
		crmWriting int
	}{
		{name: "duplicate", person: &ports.Person{ContactID: "c7", Events: []ports.EventRecord{settledEvt1}},
			msg: ev{}.msg(), want: domain.OutcomeDuplicate, reads: 1},
		{name: "known person, skip", person: &ports.Person{ContactID: "c7"},
			msg: ev{}.msg(), want: domain.OutcomeSkipped, reads: 1, writes: 1},
		{name: "known person, update", person: &ports.Person{ContactID: "c7"}, seed: []domain.Match{{ID: "c7", Role: domain.RoleLead, Email: ada}},
			msg: ev{Campaign: "camp_update"}.msg(), want: domain.OutcomeUpdated, reads: 1, writes: 1, crmCalls: 1, crmWriting: 1},
		{name: "new person", msg: ev{}.msg(), want: domain.OutcomeCreated, reads: 1, writes: 2, crmCalls: 2, crmWriting: 1},
		{name: "person in the CRM, unknown to the ledger, skip", seed: []domain.Match{{ID: "c7", Role: domain.RoleLead, Email: ada}},
			msg: ev{}.msg(), want: domain.OutcomeSkipped, reads: 1, writes: 1, crmCalls: 1},
		{name: "action nothing", msg: ev{Campaign: "camp_nothing"}.msg(), want: domain.OutcomeNothing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.person != nil {
				seedPerson(t, h, *tt.person)
			}
			h.crm.Seed(tt.seed...)
			r0, w0 := h.ledger.Ops()
			v := h.svc.Handle(context.Background(), tt.msg)
			if v.Outcome != tt.want {
				t.Fatalf("outcome: got %q (retry %v %s %v), want %q", v.Outcome, v.Retry, v.Reason, v.Err, tt.want)
			}
			r, w := h.ledger.Ops()
			if r-r0 != tt.reads || w-w0 != tt.writes {
				t.Errorf("ledger operations: got %d reads %d writes, want %d reads %d writes", r-r0, w-w0, tt.reads, tt.writes)
			}
			if n := len(h.crm.Calls()); n != tt.crmCalls {
				t.Errorf("CRM calls: got %d (%q), want %d", n, callsOf(h.crm), tt.crmCalls)
			}
			if n := writesOf(h.crm); n != tt.crmWriting {
				t.Errorf("CRM writes: got %d, want %d", n, tt.crmWriting)
			}
		})
	}
}
