package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Op names a CRM call, for a harness's fault injection.
type Op string

// The calls of ports.CRM.
const (
	OpFind   Op = "find"
	OpCreate Op = "create"
	OpUpdate Op = "update"
)

// Fault is a failure a harness injects into the CRM behind the
// implementation, as the network or the CRM would cause it.
type Fault int

// Faults.
const (
	// ServerError: the CRM answers a server error (a 5xx) and applies
	// nothing.
	ServerError Fault = iota + 1
	// LostResponse: the CRM applies the call, and its answer never reaches
	// the caller (a reset or a timeout after the commit).
	LostResponse
	// Stall: the CRM applies the call and answers only after the caller
	// has given up (its ctx's deadline passed while the call was in
	// flight).
	Stall
)

// CRMCaps are the ways CRMs legitimately differ. A harness declares them,
// and a scenario whose check depends on one says in its name which
// behaviour it checks, so nothing is skipped silently.
type CRMCaps struct {
	// UniqueEmail: every contact's email is unique, leads' too (HubSpot),
	// so a second lead with a taken email is refused as a duplicate. When
	// false, only users' emails are unique and leads may share an email
	// (Intercom).
	UniqueEmail bool
	// ExternalIDs: users carry an external id, unique among contacts, and
	// Find looks it up consistently (at once, never behind search).
	ExternalIDs bool
	// Paces: the implementation is a client that learns the CRM's
	// rate-limit budget and keeps a request back, unsent, while it knows
	// the budget is spent, rather than sending it to be refused.
	Paces bool
}

// CRMHarness is one ports.CRM under test with the hooks the scenarios need
// to act on the CRM behind it. Every field is required unless its comment
// says otherwise. Hooks are called from the test's goroutine only.
type CRMHarness struct {
	// CRM is the implementation under test, on an empty CRM.
	CRM ports.CRM
	// Refused is the same implementation on the same CRM with a credential
	// the CRM refuses (a wrong or revoked token).
	Refused ports.CRM
	Caps    CRMCaps
	// SearchLag is how long after a write the CRM's search may not show
	// it; the suite lets it pass (with Advance) before it relies on
	// search. 0: search is consistent.
	SearchLag time.Duration
	// Now is the clock by which the implementation judges ctx deadlines:
	// time.Now for a client of a real CRM, the simulated clock of an
	// in-memory one.
	Now func() time.Time
	// Advance moves the clock of the CRM and of the implementation
	// forward by d: rate-limit windows pass and search catches up.
	Advance func(d time.Duration)
	// Inject makes every call of op fail with f from now on, until Clear.
	Inject func(op Op, f Fault)
	// Clear ends every injected fault.
	Clear func()
	// SpendBudget spends the rest of the CRM's current rate-limit window,
	// as other clients of the same account would, without the
	// implementation's knowledge: its next request is refused by the CRM.
	SpendBudget func()
	// Delete removes a contact behind the implementation's back, as a
	// deletion or a merge in the CRM would.
	Delete func(id string)
	// Requests counts the requests that have reached the CRM so far.
	Requests func() int
	// Stored returns every contact the CRM holds with this email, whatever
	// search shows yet: its id, role, email, external id and marker.
	Stored func(email string) []domain.Match
	// Custom returns the custom fields the CRM holds on the contact with
	// this id, as text.
	Custom func(id string) map[string]string
	// KnownField names a custom field the CRM has, of type text;
	// UnknownField one it does not have.
	KnownField, UnknownField string
	// CheckFields, optional, is the implementation's start-up check of the
	// custom fields campaigns map: nil when everything is there, else a
	// Permanent error naming every missing one. Nil when the
	// implementation has none (the scenario then says so and is skipped).
	CheckFields func(ctx context.Context, names []string) error
}

// crmScenario is one scenario of the CRM suite. name may depend on what
// the harness declares; skip, when set, returns why the scenario does not
// apply to the harness ("" when it does).
type crmScenario struct {
	name func(CRMHarness) string
	skip func(CRMHarness) string
	run  func(t *testing.T, h CRMHarness)
}

func named(s string) func(CRMHarness) string { return func(CRMHarness) string { return s } }

// CRM runs the ports.CRM contract against the implementation newCRM
// returns; each call must return a harness on an empty CRM. One harness is
// made first to read what it declares, which names the scenarios.
func CRM(t *testing.T, newCRM func(t *testing.T) CRMHarness) {
	t.Helper()
	probe := newCRM(t)
	for _, sc := range crmScenarios() {
		t.Run(sc.name(probe), func(t *testing.T) {
			h := newCRM(t)
			if sc.skip != nil {
				if why := sc.skip(h); why != "" {
					t.Skip(why)
				}
			}
			sc.run(t, h)
		})
	}
}

func crmScenarios() []crmScenario {
	lead := func(email, marker string) domain.Contact {
		return domain.Contact{Role: domain.RoleLead, Email: email, Name: "Ada Lovelace", Marker: marker}
	}
	user := func(h CRMHarness, email, xid, marker string) domain.Contact {
		c := domain.Contact{Role: domain.RoleUser, Email: email, Name: "Grace Hopper", Marker: marker}
		if h.Caps.ExternalIDs {
			c.ExternalID = xid
		}
		return c
	}
	return []crmScenario{
		{
			name: named("create: a new lead and a new user are created (not Existing), stored with their kind and marker, and found by email"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				l := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				u := mustCreate(t, h, user(h, "grace@example.com", "usr-1", "ev-2"))
				wantStored(t, h, "ada@example.com", domain.Match{ID: l, Role: domain.RoleLead, Email: "ada@example.com", Marker: "ev-1"})
				want := domain.Match{ID: u, Role: domain.RoleUser, Email: "grace@example.com", Marker: "ev-2"}
				if h.Caps.ExternalIDs {
					want.ExternalID = "usr-1"
				}
				wantStored(t, h, "grace@example.com", want)
				settle(h)
				for _, w := range []struct {
					email string
					id    string
					role  domain.Role
				}{{"ada@example.com", l, domain.RoleLead}, {"grace@example.com", u, domain.RoleUser}} {
					ms, err := h.CRM.Find(ctx, domain.Identity{Email: w.email})
					if err != nil {
						t.Fatalf("Find(%s): %v", w.email, err)
					}
					m, ok := byID(ms, w.id)
					if !ok || m.Role != w.role || !strings.EqualFold(m.Email, w.email) {
						t.Errorf("Find(%s) = %+v, want %s as a %s", w.email, ms, w.id, w.role)
					}
				}
			},
		},
		{
			name: named("find: nobody matching is an empty answer and no error"),
			run: func(t *testing.T, h CRMHarness) {
				mustCreate(t, h, lead("ada@example.com", "ev-1"))
				settle(h)
				who := domain.Identity{Email: "nobody@example.com", Marker: "ev-none"}
				if h.Caps.ExternalIDs {
					who.ExternalID = "usr-none"
				}
				ms, err := h.CRM.Find(t.Context(), who)
				if err != nil || len(ms) != 0 {
					t.Errorf("Find() = %+v, %v; want nothing and no error", ms, err)
				}
			},
		},
		{
			name: named("find: an identity with nothing to look up by is a Permanent error, never an empty answer that invites a blind create"),
			run: func(t *testing.T, h CRMHarness) {
				ms, err := h.CRM.Find(t.Context(), domain.Identity{})
				if err == nil || ports.KindOf(err) != ports.Permanent {
					t.Errorf("Find(empty identity) = %+v, %v; want a Permanent error", ms, err)
				}
			},
		},
		{
			name: named("find by external id: a new user is found at once, before search catches up (a consistent lookup)"),
			skip: func(h CRMHarness) string {
				if !h.Caps.ExternalIDs {
					return "the harness declares no external ids"
				}
				return ""
			},
			run: func(t *testing.T, h CRMHarness) {
				u := mustCreate(t, h, user(h, "grace@example.com", "usr-1", "ev-1"))
				ms, err := h.CRM.Find(t.Context(), domain.Identity{ExternalID: "usr-1"})
				if err != nil {
					t.Fatalf("Find: %v", err)
				}
				if m, ok := byID(ms, u); !ok || m.ExternalID != "usr-1" || m.Role != domain.RoleUser {
					t.Errorf("Find(external id) = %+v, want user %s at once", ms, u)
				}
			},
		},
		{
			name: named("duplicate user by email: Create answers Existing with the first user's id, and stores no second contact"),
			run: func(t *testing.T, h CRMHarness) {
				first := mustCreate(t, h, user(h, "grace@example.com", "usr-1", "ev-1"))
				settle(h)
				second := user(h, "grace@example.com", "", "ev-2")
				res, err := h.CRM.Create(t.Context(), second)
				if err != nil || res != (ports.Created{ID: first, Existing: true}) {
					t.Errorf("Create(same email) = %+v, %v; want Existing %s", res, err, first)
				}
				wantCount(t, h, "grace@example.com", 1)
			},
		},
		{
			name: named("duplicate user by external id (another email): Create answers Existing with the first user's id, and stores nothing"),
			skip: func(h CRMHarness) string {
				if !h.Caps.ExternalIDs {
					return "the harness declares no external ids"
				}
				return ""
			},
			run: func(t *testing.T, h CRMHarness) {
				first := mustCreate(t, h, user(h, "grace@example.com", "usr-1", "ev-1"))
				res, err := h.CRM.Create(t.Context(), user(h, "hopper@example.com", "usr-1", "ev-2"))
				if err != nil || res != (ports.Created{ID: first, Existing: true}) {
					t.Errorf("Create(same external id) = %+v, %v; want Existing %s", res, err, first)
				}
				wantCount(t, h, "hopper@example.com", 0)
			},
		},
		{
			name: named("409 on create: a duplicate user sent before search shows the first is answered Existing with the first's id (the CRM's guard, not a search)"),
			run: func(t *testing.T, h CRMHarness) {
				first := mustCreate(t, h, user(h, "grace@example.com", "", "ev-1"))
				res, err := h.CRM.Create(t.Context(), user(h, "grace@example.com", "", "ev-2"))
				if err != nil || res != (ports.Created{ID: first, Existing: true}) {
					t.Errorf("Create(duplicate, inside the search lag) = %+v, %v; want Existing %s", res, err, first)
				}
				wantCount(t, h, "grace@example.com", 1)
			},
		},
		{
			name: func(h CRMHarness) string {
				if h.Caps.UniqueEmail {
					return "duplicate lead by email (emails unique for every contact): Create answers Existing with the first's id, and stores nothing"
				}
				return "leads sharing an email (only users' emails are unique): a second lead is a second contact, and Find by email returns both"
			},
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				first := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				res, err := h.CRM.Create(ctx, lead("ada@example.com", "ev-2"))
				if err != nil {
					t.Fatalf("Create(second lead): %v", err)
				}
				if h.Caps.UniqueEmail {
					if res != (ports.Created{ID: first, Existing: true}) {
						t.Errorf("Create(second lead) = %+v, want Existing %s", res, first)
					}
					wantCount(t, h, "ada@example.com", 1)
					return
				}
				if res.Existing || res.ID == "" || res.ID == first {
					t.Errorf("Create(second lead) = %+v, want a new contact", res)
				}
				wantCount(t, h, "ada@example.com", 2)
				settle(h)
				ms, err := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com"})
				_, ok1 := byID(ms, first)
				_, ok2 := byID(ms, res.ID)
				if err != nil || !ok1 || !ok2 {
					t.Errorf("Find(email) = %+v, %v; want both leads", ms, err)
				}
			},
		},
		{
			name: named("concurrent creates of one user make one contact, and every create answers its id"),
			run: func(t *testing.T, h CRMHarness) {
				const n = 6
				res := make([]ports.Created, n)
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						res[i], errs[i] = h.CRM.Create(t.Context(), user(h, "grace@example.com", "usr-1", fmt.Sprintf("ev-%d", i)))
					})
				}
				wg.Wait()
				stored := h.Stored("grace@example.com")
				if len(stored) != 1 {
					t.Fatalf("stored %+v, want exactly one contact", stored)
				}
				created := 0
				for i := range n {
					if errs[i] != nil || res[i].ID != stored[0].ID {
						t.Errorf("create %d = %+v, %v; want the id %s", i, res[i], errs[i], stored[0].ID)
					}
					if !res[i].Existing {
						created++
					}
				}
				if created != 1 {
					t.Errorf("%d creates answered not Existing, want exactly 1", created)
				}
			},
		},
		{
			name: named("response lost after commit: Create reports Transient and Uncertain; Find by email and marker finds the one contact carrying the marker"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				h.Inject(OpCreate, LostResponse)
				_, err := h.CRM.Create(ctx, lead("ada@example.com", "ev-1"))
				h.Clear()
				if pe := portsError(t, err); pe.Kind != ports.Transient || !pe.Uncertain {
					t.Fatalf("Create with its answer lost: %v (kind %s, uncertain %t), want Transient and Uncertain", err, pe.Kind, pe.Uncertain)
				}
				stored := wantCount(t, h, "ada@example.com", 1)
				settle(h)
				ms, err := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com", Marker: "ev-1"})
				if err != nil {
					t.Fatalf("Find: %v", err)
				}
				if m, ok := byID(ms, stored[0].ID); !ok || m.Marker != "ev-1" {
					t.Errorf("Find(email, marker) = %+v, want %s carrying marker ev-1", ms, stored[0].ID)
				}
				wantCount(t, h, "ada@example.com", 1)
			},
		},
		{
			name: named("deadline in flight: a create cut off by its deadline after it was sent is Transient, Uncertain and wraps the deadline; the CRM's commit is found by marker"),
			run: func(t *testing.T, h CRMHarness) {
				h.Inject(OpCreate, Stall)
				// Long enough for the request to reach the CRM on a loaded
				// machine; the CRM then holds its answer past the deadline.
				ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
				_, err := h.CRM.Create(ctx, lead("ada@example.com", "ev-1"))
				cancel()
				h.Clear()
				if pe := portsError(t, err); pe.Kind != ports.Transient || !pe.Uncertain || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Create cut off in flight: %v (kind %s, uncertain %t), want Transient, Uncertain, wrapping context.DeadlineExceeded",
						err, pe.Kind, pe.Uncertain)
				}
				settle(h)
				stored := wantCount(t, h, "ada@example.com", 1)
				ms, err := h.CRM.Find(t.Context(), domain.Identity{Email: "ada@example.com", Marker: "ev-1"})
				if m, ok := byID(ms, stored[0].ID); err != nil || !ok || m.Marker != "ev-1" {
					t.Errorf("Find(email, marker) = %+v, %v; want %s carrying marker ev-1", ms, err, stored[0].ID)
				}
			},
		},
		{
			name: named("response lost after commit, user: a repeated create answers the same id (Existing or its own) and stores no second contact"),
			run: func(t *testing.T, h CRMHarness) {
				c := user(h, "grace@example.com", "usr-1", "ev-1")
				h.Inject(OpCreate, LostResponse)
				_, err := h.CRM.Create(t.Context(), c)
				h.Clear()
				if err == nil {
					t.Fatal("Create with its answer lost reported success")
				}
				stored := wantCount(t, h, "grace@example.com", 1)
				res, err := h.CRM.Create(t.Context(), c)
				if err != nil || res.ID != stored[0].ID {
					t.Errorf("repeated Create = %+v, %v; want the id %s", res, err, stored[0].ID)
				}
				wantCount(t, h, "grace@example.com", 1)
			},
		},
		{
			name: named("marker: Create stores it; Find by marker alone, and by email and marker, returns the contact carrying it; Update keeps it"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				id := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				mustCreate(t, h, lead("bob@example.com", "ev-2"))
				if err := h.CRM.Update(ctx, id, domain.Contact{Name: "Ada King", Marker: "ev-9"}); err != nil {
					t.Fatalf("Update: %v", err)
				}
				wantStored(t, h, "ada@example.com", domain.Match{ID: id, Role: domain.RoleLead, Email: "ada@example.com", Marker: "ev-1"})
				settle(h)
				for _, who := range []domain.Identity{{Marker: "ev-1"}, {Email: "ada@example.com", Marker: "ev-1"}} {
					ms, err := h.CRM.Find(ctx, who)
					if err != nil {
						t.Fatalf("Find(%+v): %v", who, err)
					}
					if m, ok := byID(ms, id); !ok || m.Marker != "ev-1" {
						t.Errorf("Find(%+v) = %+v, want %s carrying marker ev-1", who, ms, id)
					}
					for _, m := range ms {
						if m.ID != id {
							t.Errorf("Find(%+v) returned %+v, another person's contact", who, m)
						}
					}
				}
				ms, err := h.CRM.Find(ctx, domain.Identity{Marker: "ev-9"})
				if err != nil || len(ms) != 0 {
					t.Errorf("Find(the update's marker) = %+v, %v; want nothing: an update stores no marker", ms, err)
				}
			},
		},
		{
			name: named("rate limit: a spent budget is RateLimited with RetryAfter and applies nothing; once RetryAfter has passed the call goes through"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				h.SpendBudget()
				var wait time.Duration
				_, err := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com"})
				wait = max(wait, wantRateLimited(t, "Find", err))
				_, err = h.CRM.Create(ctx, lead("ada@example.com", "ev-1"))
				wait = max(wait, wantRateLimited(t, "Create", err))
				wantCount(t, h, "ada@example.com", 0)
				h.Advance(wait)
				if _, err := h.CRM.Create(ctx, lead("ada@example.com", "ev-1")); err != nil {
					t.Errorf("Create after RetryAfter (%s): %v", wait, err)
				}
				wantCount(t, h, "ada@example.com", 1)
			},
		},
		{
			name: func(h CRMHarness) string {
				if !h.Caps.Paces {
					return "rate limit honoured: not declared (the implementation does not pace; the CRM's refusal is all there is)"
				}
				return "rate limit honoured: while the budget is known spent, calls are kept back unsent (no request reaches the CRM), even a create with a deadline"
			},
			skip: func(h CRMHarness) string {
				if !h.Caps.Paces {
					return "the harness declares no pacing"
				}
				return ""
			},
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				h.SpendBudget()
				_, err := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com"}) // learns the budget is spent
				wantRateLimited(t, "Find", err)
				before := h.Requests()
				_, err = h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com"})
				wantRateLimited(t, "Find", err)
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err = h.CRM.Create(dctx, lead("ada@example.com", "ev-1"))
				if err == nil {
					t.Fatal("Create with the budget spent succeeded")
				}
				if pe := portsError(t, err); pe.Uncertain {
					t.Errorf("Create kept back: %v is Uncertain, want certain (never sent)", err)
				}
				if n := h.Requests() - before; n != 0 {
					t.Errorf("%d requests reached the CRM while its budget was known spent, want 0", n)
				}
				wantCount(t, h, "ada@example.com", 0)
			},
		},
		{
			name: named("classified: a server error is Transient for find, create and update, and the create stores nothing"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				id := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				for _, op := range []Op{OpFind, OpCreate, OpUpdate} {
					h.Inject(op, ServerError)
				}
				_, ferr := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com"})
				_, cerr := h.CRM.Create(ctx, lead("bob@example.com", "ev-2"))
				uerr := h.CRM.Update(ctx, id, domain.Contact{Name: "Ada King"})
				h.Clear()
				for op, err := range map[Op]error{OpFind: ferr, OpCreate: cerr, OpUpdate: uerr} {
					if pe := portsError(t, err); pe.Kind != ports.Transient {
						t.Errorf("%s under a server error: %v (kind %s), want Transient", op, err, pe.Kind)
					}
				}
				wantCount(t, h, "bob@example.com", 0)
			},
		},
		{
			name: named("classified: an unknown custom field is Permanent and certain (not Uncertain) for create and update, and nothing is stored"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				id := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				bad := lead("bob@example.com", "ev-2")
				bad.Custom = map[string]any{h.UnknownField: "x"}
				_, cerr := h.CRM.Create(ctx, bad)
				uerr := h.CRM.Update(ctx, id, domain.Contact{Custom: map[string]any{h.UnknownField: "x"}})
				for op, err := range map[Op]error{OpCreate: cerr, OpUpdate: uerr} {
					if pe := portsError(t, err); pe.Kind != ports.Permanent || pe.Uncertain {
						t.Errorf("%s with an unknown custom field: %v (kind %s, uncertain %t), want Permanent and certain", op, err, pe.Kind, pe.Uncertain)
					}
				}
				wantCount(t, h, "bob@example.com", 0)
				ok := lead("cyd@example.com", "ev-3")
				ok.Custom = map[string]any{h.KnownField: "https://r.example/1"}
				mustCreate(t, h, ok)
			},
		},
		{
			name: named("classified: a refused credential is Unauthorized for find, create and update, and nothing is stored"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				id := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				_, ferr := h.Refused.Find(ctx, domain.Identity{Email: "ada@example.com"})
				_, cerr := h.Refused.Create(ctx, lead("bob@example.com", "ev-2"))
				uerr := h.Refused.Update(ctx, id, domain.Contact{Name: "Ada King"})
				for op, err := range map[Op]error{OpFind: ferr, OpCreate: cerr, OpUpdate: uerr} {
					if pe := portsError(t, err); pe.Kind != ports.Unauthorized {
						t.Errorf("%s with a refused credential: %v (kind %s), want Unauthorized", op, err, pe.Kind)
					}
				}
				wantCount(t, h, "bob@example.com", 0)
			},
		},
		{
			name: func(h CRMHarness) string {
				if h.CheckFields == nil {
					return "start-up check of custom fields: not declared (the implementation has none)"
				}
				return "start-up check: every unknown custom field is reported at once (Permanent), known ones pass"
			},
			skip: func(h CRMHarness) string {
				if h.CheckFields == nil {
					return "the harness declares no start-up check of custom fields"
				}
				return ""
			},
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				if err := h.CheckFields(ctx, []string{h.KnownField}); err != nil {
					t.Errorf("CheckFields(known) = %v, want nil", err)
				}
				other := h.UnknownField + "_too"
				err := h.CheckFields(ctx, []string{h.KnownField, h.UnknownField, other})
				if err == nil {
					t.Fatal("CheckFields(with two unknown fields) = nil, want an error naming both")
				}
				if k := ports.KindOf(err); k != ports.Permanent {
					t.Errorf("CheckFields: %v is %s, want Permanent", err, k)
				}
				for _, n := range []string{h.UnknownField, other} {
					if !strings.Contains(err.Error(), n) {
						t.Errorf("CheckFields: %q does not name %q", err, n)
					}
				}
				if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(err.Error(), other, ""), h.UnknownField, ""), h.KnownField) {
					t.Errorf("CheckFields: %q names the known field %q", err, h.KnownField)
				}
			},
		},
		{
			name: named("update never changes the kind: a lead stays a lead and a user a user, whatever Role the update carries"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				l := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				u := mustCreate(t, h, user(h, "grace@example.com", "usr-1", "ev-2"))
				if err := h.CRM.Update(ctx, l, domain.Contact{Role: domain.RoleUser, Name: "Ada King"}); err != nil {
					t.Fatalf("Update(lead): %v", err)
				}
				if err := h.CRM.Update(ctx, u, domain.Contact{Role: domain.RoleLead, Name: "Grace B. Hopper"}); err != nil {
					t.Fatalf("Update(user): %v", err)
				}
				settle(h)
				for _, w := range []struct {
					email, id string
					role      domain.Role
				}{{"ada@example.com", l, domain.RoleLead}, {"grace@example.com", u, domain.RoleUser}} {
					if s := wantCount(t, h, w.email, 1); s[0].Role != w.role {
						t.Errorf("stored %+v, want still a %s", s[0], w.role)
					}
					ms, err := h.CRM.Find(ctx, domain.Identity{Email: w.email})
					if m, ok := byID(ms, w.id); err != nil || !ok || m.Role != w.role {
						t.Errorf("Find(%s) = %+v, %v; want %s still a %s", w.email, ms, err, w.id, w.role)
					}
				}
			},
		},
		{
			name: named("update writes the fields it sets and leaves the others alone"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				c := lead("ada@example.com", "ev-1")
				c.Custom = map[string]any{h.KnownField: "https://r.example/1"}
				id := mustCreate(t, h, c)
				if err := h.CRM.Update(ctx, id, domain.Contact{Name: "Ada King"}); err != nil {
					t.Fatalf("Update(name): %v", err)
				}
				if got := h.Custom(id)[h.KnownField]; got != "https://r.example/1" {
					t.Errorf("after an update that does not set it, %s = %q, want it kept", h.KnownField, got)
				}
				if err := h.CRM.Update(ctx, id, domain.Contact{Custom: map[string]any{h.KnownField: "https://r.example/2"}}); err != nil {
					t.Fatalf("Update(custom field): %v", err)
				}
				if got := h.Custom(id)[h.KnownField]; got != "https://r.example/2" {
					t.Errorf("after an update that sets it, %s = %q, want the new value", h.KnownField, got)
				}
				if got := c.Custom[h.KnownField]; got != "https://r.example/1" {
					t.Errorf("the caller's contact changed: %s = %q; Create and Update must not write into it", h.KnownField, got)
				}
			},
		},
		{
			name: named("vanished contact: Update of a deleted contact is NotFound, and Find no longer returns it"),
			run: func(t *testing.T, h CRMHarness) {
				ctx := t.Context()
				id := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				settle(h)
				h.Delete(id)
				err := h.CRM.Update(ctx, id, domain.Contact{Name: "Ada King"})
				if pe := portsError(t, err); pe.Kind != ports.NotFound {
					t.Errorf("Update(deleted contact): %v (kind %s), want NotFound", err, pe.Kind)
				}
				ms, err := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com", Marker: "ev-1"})
				if _, ok := byID(ms, id); err != nil || ok {
					t.Errorf("Find after the deletion = %+v, %v; want the contact gone", ms, err)
				}
			},
		},
		{
			name: named("deadline: a create whose ctx deadline has passed is not sent (no request, nothing stored) and reports the deadline, certain"),
			run: func(t *testing.T, h CRMHarness) {
				// Past by the implementation's clock and by the real one, which
				// a context's Err follows.
				ctx, cancel := context.WithDeadline(t.Context(), earlier(h.Now(), time.Now()).Add(-time.Second))
				defer cancel()
				before := h.Requests()
				_, err := h.CRM.Create(ctx, lead("ada@example.com", "ev-1"))
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Create past its deadline: %v, want one wrapping context.DeadlineExceeded", err)
				}
				if pe := portsError(t, err); pe.Uncertain {
					t.Errorf("Create past its deadline: %v is Uncertain, want certain (never sent)", err)
				}
				if n := h.Requests() - before; n != 0 {
					t.Errorf("%d requests reached the CRM, want 0", n)
				}
				wantCount(t, h, "ada@example.com", 0)
			},
		},
		{
			name: named("cancelled: find, create and update with a cancelled ctx fail with its error, send nothing, and store nothing"),
			run: func(t *testing.T, h CRMHarness) {
				id := mustCreate(t, h, lead("ada@example.com", "ev-1"))
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				before := h.Requests()
				_, ferr := h.CRM.Find(ctx, domain.Identity{Email: "ada@example.com"})
				_, cerr := h.CRM.Create(ctx, lead("bob@example.com", "ev-2"))
				uerr := h.CRM.Update(ctx, id, domain.Contact{Name: "Ada King"})
				for op, err := range map[Op]error{OpFind: ferr, OpCreate: cerr, OpUpdate: uerr} {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("%s with a cancelled ctx: %v, want one wrapping context.Canceled", op, err)
					}
				}
				if n := h.Requests() - before; n != 0 {
					t.Errorf("%d requests reached the CRM, want 0", n)
				}
				wantCount(t, h, "bob@example.com", 0)
			},
		},
	}
}

// settle lets the CRM's search catch up with every write so far.
func settle(h CRMHarness) {
	if h.SearchLag > 0 {
		h.Advance(h.SearchLag + time.Second)
	}
}

// mustCreate creates c and returns its id, failing unless it was new.
func mustCreate(t *testing.T, h CRMHarness, c domain.Contact) string {
	t.Helper()
	res, err := h.CRM.Create(t.Context(), c)
	if err != nil {
		t.Fatalf("Create(%s %s): %v", c.Role, c.Email, err)
	}
	if res.ID == "" || res.Existing {
		t.Fatalf("Create(%s %s) = %+v, want a new contact's id", c.Role, c.Email, res)
	}
	return res.ID
}

// wantCount checks how many contacts the CRM holds with email, and returns
// them.
func wantCount(t *testing.T, h CRMHarness, email string, n int) []domain.Match {
	t.Helper()
	s := h.Stored(email)
	if len(s) != n {
		t.Fatalf("the CRM holds %d contacts with %s (%+v), want %d", len(s), email, s, n)
	}
	return s
}

// wantStored checks that the CRM holds exactly this contact with email
// (CreatedAt aside).
func wantStored(t *testing.T, h CRMHarness, email string, want domain.Match) {
	t.Helper()
	s := wantCount(t, h, email, 1)
	got := s[0]
	got.CreatedAt = 0
	got.Email = strings.ToLower(got.Email)
	if got != want {
		t.Errorf("stored %+v, want %+v", got, want)
	}
}

// wantRateLimited checks err is RateLimited, certain, with a RetryAfter,
// and returns the RetryAfter.
func wantRateLimited(t *testing.T, op string, err error) time.Duration {
	t.Helper()
	pe := portsError(t, err)
	if pe.Kind != ports.RateLimited || pe.RetryAfter <= 0 || pe.Uncertain {
		t.Fatalf("%s with the budget spent: %v (kind %s, retry after %s, uncertain %t), want RateLimited, certain, with a RetryAfter",
			op, err, pe.Kind, pe.RetryAfter, pe.Uncertain)
	}
	return pe.RetryAfter
}

// portsError returns the *ports.Error in err, failing the test without
// one: the application branches on it.
func portsError(t *testing.T, err error) *ports.Error {
	t.Helper()
	var pe *ports.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ports.Error", err, err)
	}
	return pe
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func byID(ms []domain.Match, id string) (domain.Match, bool) {
	i := slices.IndexFunc(ms, func(m domain.Match) bool { return m.ID == id })
	if i < 0 {
		return domain.Match{}, false
	}
	return ms[i], true
}
