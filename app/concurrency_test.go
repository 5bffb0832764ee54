package app_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// doneWatch reports when the service first asks for the context's Done
// channel. Nothing in Handle does so before it waits for the person's lock,
// so a closed asked channel means the event has reached that wait.
type doneWatch struct {
	context.Context
	once  sync.Once
	asked chan struct{}
}

func watchDone(ctx context.Context) *doneWatch {
	return &doneWatch{Context: ctx, asked: make(chan struct{})}
}

func (c *doneWatch) Done() <-chan struct{} {
	c.once.Do(func() { close(c.asked) })
	return c.Context.Done()
}

// blockingCreates makes Create on crm announce which event entered it on
// entered, then wait until that event's gate is closed.
func blockingCreates(crm *fakeCRM, entered chan<- string, gates map[string]chan struct{}) {
	crm.createHook = func(ctx context.Context, c domain.Contact) (ports.Created, error) {
		name := tagOf(ctx)
		entered <- name
		select {
		case <-gates[name]:
		case <-ctx.Done():
			return ports.Created{}, ctx.Err()
		}
		return crm.create(c)
	}
}

// handleAsync runs Handle in a goroutine; the verdict arrives on the channel.
func handleAsync(h *harness, ctx context.Context, m app.Message) <-chan app.Verdict {
	ch := make(chan app.Verdict, 1)
	go func() { ch <- h.svc.Handle(ctx, m) }()
	return ch
}

func TestHandleSerialisesPerEmail(t *testing.T) {
	t.Run("same email waits for the first event, other emails and connections do not", func(t *testing.T) {
		h := newHarness(t)
		entered := make(chan string, 8)
		gates := map[string]chan struct{}{"e1": make(chan struct{}), "e3": make(chan struct{}), "e4": make(chan struct{})}
		blockingCreates(h.crm, entered, gates)
		blockingCreates(h.crmEU, entered, gates)
		var firstCreateReturned atomic.Bool
		inner := h.crm.createHook
		h.crm.createHook = func(ctx context.Context, c domain.Contact) (ports.Created, error) {
			res, err := inner(ctx, c)
			if tagOf(ctx) == "e1" {
				firstCreateReturned.Store(true)
			}
			return res, err
		}
		var e2EarlyUpdate atomic.Bool
		h.crm.updateHook = func(ctx context.Context, id string, c domain.Contact) error {
			if tagOf(ctx) == "e2" && !firstCreateReturned.Load() {
				e2EarlyUpdate.Store(true)
			}
			return nil
		}

		// e1 enters the CRM for Ada and stays inside Create.
		v1 := handleAsync(h, tagged(context.Background(), "e1"), ev{ID: "e1", Campaign: "camp_update"}.msg())
		if got := recv(t, entered, "e1 to enter Create"); got != "e1" {
			t.Fatalf("first to enter Create: got %s, want e1", got)
		}

		// e2, for Ada spelt differently, reaches the in-process lock.
		ctx2 := watchDone(tagged(context.Background(), "e2"))
		v2 := handleAsync(h, ctx2, ev{ID: "e2", Campaign: "camp_update", Email: " ADA@example.COM"}.msg())
		recv(t, ctx2.asked, "e2 to wait for the person's lock")

		// e3 (Bob, same connection) and e4 (Ada, other connection) are not
		// held up by e1.
		v3 := handleAsync(h, tagged(context.Background(), "e3"), ev{ID: "e3", Campaign: "camp_update", Email: bob}.msg())
		if got := recv(t, entered, "e3 to enter Create"); got != "e3" {
			t.Fatalf("next to enter Create: got %s, want e3 (another email must not wait for Ada)", got)
		}
		v4 := handleAsync(h, tagged(context.Background(), "e4"), ev{ID: "e4", Campaign: "camp_eu"}.msg())
		if got := recv(t, entered, "e4 to enter Create"); got != "e4" {
			t.Fatalf("next to enter Create: got %s, want e4 (Ada on another connection must not wait)", got)
		}
		close(gates["e3"])
		close(gates["e4"])
		checkVerdict(t, recv(t, v3, "e3's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"})
		checkVerdict(t, recv(t, v4, "e4's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"})

		// While e1 is still inside Create, e2 has touched neither the CRM
		// nor the ledger nor the person: it waits in the process rather
		// than bouncing through the broker as person_busy.
		equalList(t, "e2's CRM calls while e1 is in flight", h.crm.Calls("e2"), nil)
		equalList(t, "e2's ledger calls while e1 is in flight", h.ledger.Calls("intercom/e2"), nil)

		close(gates["e1"])
		checkVerdict(t, recv(t, v1, "e1's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c2"})
		// e2 then finds Ada's contact in the person record left by e1 and
		// updates it: one contact, never two creates.
		checkVerdict(t, recv(t, v2, "e2's verdict"), app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c2"})
		equalList(t, "e1's CRM calls", h.crm.Calls("e1"), []string{"find email:ada@example.com", "create lead ada@example.com"})
		equalList(t, "e2's CRM calls", h.crm.Calls("e2"), []string{"update c2"})
		if e2EarlyUpdate.Load() {
			t.Error("e2 entered the CRM before e1's create returned")
		}
		if got := h.metrics.Retries(); len(got) != 0 {
			t.Errorf("retries: got %q, want none (the same process never answers person_busy to itself)", got)
		}
	})

	t.Run("a waiting event gives up when its context ends, without touching anything", func(t *testing.T) {
		h := newHarness(t)
		entered := make(chan string, 2)
		gates := map[string]chan struct{}{"e1": make(chan struct{})}
		blockingCreates(h.crm, entered, gates)

		v1 := handleAsync(h, tagged(context.Background(), "e1"), ev{ID: "e1"}.msg())
		recv(t, entered, "e1 to enter Create")

		ctx, cancel := context.WithCancel(tagged(context.Background(), "e2"))
		defer cancel()
		ctx2 := watchDone(ctx)
		v2 := handleAsync(h, ctx2, ev{ID: "e2"}.msg())
		recv(t, ctx2.asked, "e2 to wait for the person's lock")
		cancel()
		checkVerdict(t, recv(t, v2, "e2's verdict"), app.Verdict{Retry: true, Reason: "cancelled"})
		equalList(t, "e2's CRM calls", h.crm.Calls("e2"), nil)
		equalList(t, "ledger calls while e1 holds Ada", h.ledger.Calls(""), []string{"event intercom/e1", "event intercom/e1"})
		equalList(t, "people calls while e1 holds Ada", h.people.Calls(), []string{"lock " + adaKey, "save " + adaKey + " pending=e1"})

		close(gates["e1"])
		checkVerdict(t, recv(t, v1, "e1's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"})
		equalList(t, "outcomes", h.metrics.Outcomes(), []string{"camp_lead|create_lead|created|"})
		equalList(t, "retries", h.metrics.Retries(), []string{"camp_lead|cancelled"})
		if got := h.ledger.State(); got != "intercom/e1: done created c1" {
			t.Errorf("ledger: got %q, want only e1 done (a cancelled wait is no failure)", got)
		}
	})
}

// redelivered is one event of a concurrency test, delivered until it
// settles.
type redelivered struct {
	name    string
	msg     func(attempt int) app.Message
	verdict app.Verdict // the settling one
	retries []string    // the reasons of the retries before it
}

// settleAll delivers every event from its own goroutine, each delivery
// through replica (event index + attempt) mod len(replicas), as a broker
// spreads redeliveries, and reports every verdict to observe. A
// person_busy answer waits until the person is unlocked (standing in for
// the verdict's Delay) before redelivering; retryable lists the other
// retry reasons tolerated. settleAll returns when every event has settled,
// failing the test for an event not settled within maxDeliveries.
func settleAll(t *testing.T, h *harness, replicas []*app.Service, events []*redelivered, retryable []string, observe func(string, app.Verdict)) {
	t.Helper()
	const maxDeliveries = 200
	var wg sync.WaitGroup
	for i, e := range events {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 1; attempt <= maxDeliveries; attempt++ {
				svc := replicas[(i+attempt)%len(replicas)]
				v := svc.Handle(tagged(context.Background(), e.name), e.msg(attempt))
				observe(e.name, v)
				if !v.Retry {
					e.verdict = v
					return
				}
				e.retries = append(e.retries, v.Reason)
				switch {
				case v.Reason == "person_busy":
					h.people.waitUnlocked(adaKey)
				case slices.Contains(retryable, v.Reason):
				default:
					t.Errorf("%s delivery %d: got retry %q (%v), want only person_busy or %q", e.name, attempt, v.Reason, v.Err, retryable)
					return
				}
			}
			t.Errorf("%s: not settled after %d deliveries", e.name, maxDeliveries)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	recv(t, done, "every event to settle")
}

// replicas returns n Services on the harness's fakes. Their MaxAttempts
// makes the delivery backstop (20 per attempt) unreachable by busy waits.
func replicas(t *testing.T, h *harness, n int) []*app.Service {
	t.Helper()
	cfg := h.config()
	cfg.MaxAttempts = 10
	svcs := make([]*app.Service, n)
	for r := range svcs {
		svcs[r] = h.replica(t, cfg)
	}
	return svcs
}

// holdFirstCreate makes the first Create wait, holding the person, until
// another event's delivery has come back with any verdict (observe sees
// every verdict): the events then truly overlap. With a lock that
// excludes, that verdict is person_busy (or, within one process, there is
// none until the creator finishes, so release must be called); with one
// that does not, it is whatever the other event did, and the test sees it.
func holdFirstCreate(h *harness) (creates *atomic.Int32, observe func(string, app.Verdict), release func()) {
	creates = new(atomic.Int32)
	released := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	var creator atomic.Value // the tag of the first create's event
	h.crm.createHook = func(ctx context.Context, c domain.Contact) (ports.Created, error) {
		if creates.Add(1) == 1 {
			creator.Store(tagOf(ctx))
			<-released
		}
		return h.crm.create(c)
	}
	observe = func(name string, _ app.Verdict) {
		if c, _ := creator.Load().(string); c != "" && c != name {
			release()
		}
	}
	return creates, observe, release
}

// TestReplicasCreateOnce delivers different events for one person
// concurrently through several replicas (Services sharing the ledger, the
// people and the CRM): exactly one contact is created, every other event
// applies its duplicate policy to it, and the person_busy retries go on
// until all have settled.
func TestReplicasCreateOnce(t *testing.T) {
	const events, nReplicas = 8, 4
	tests := []struct {
		name string
		lost bool // the one create is applied but its response is lost
	}{
		{name: "every response arrives"},
		{name: "the create's response is lost", lost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			svcs := replicas(t, h, nReplicas)
			creates, observe, _ := holdFirstCreate(h)
			var retryable []string
			if tt.lost {
				h.crm.failCreates(createLostAfter)
				retryable = []string{"transient"} // the creator's lost response
			}
			policy := map[string]domain.Outcome{} // the outcome of an event that finds the contact
			var evs []*redelivered
			for i := range events {
				e := ev{ID: fmt.Sprintf("evt-%d", i), Campaign: "camp_lead"}
				policy[e.ID] = domain.OutcomeSkipped
				if i%2 == 1 {
					e.Campaign = "camp_update"
					policy[e.ID] = domain.OutcomeUpdated
				}
				evs = append(evs, &redelivered{name: e.ID, msg: e.at})
			}

			settleAll(t, h, svcs, evs, retryable, observe)

			if n := creates.Load(); n != 1 {
				t.Errorf("creates: got %d, want exactly 1", n)
			}
			if got := h.crm.Contacts(); len(got) != 1 {
				t.Errorf("contacts: got %q, want exactly one", got)
			}
			creator := ""
			for _, c := range h.crm.RawCalls() {
				if c.Op == "create" {
					creator = c.Event
					break
				}
			}
			var wantLedger []string
			for _, e := range evs {
				want := policy[e.name]
				if e.name == creator {
					want = domain.OutcomeCreated
				}
				wantLedger = append(wantLedger, fmt.Sprintf("intercom/%s: done %s c1", e.name, want))
				if e.name == creator && tt.lost && e.verdict.Outcome == domain.OutcomeDuplicate {
					// Another event settled the lost create for it first.
					want = domain.OutcomeDuplicate
				}
				if e.verdict.Outcome != want || e.verdict.ContactID != "c1" {
					t.Errorf("%s: got %s %q, want %s c1", e.name, e.verdict.Outcome, e.verdict.ContactID, want)
				}
				// Only the creator's lost response is a failure; everyone
				// else only waited for the person.
				failed := slices.DeleteFunc(slices.Clone(e.retries), func(r string) bool { return r == "person_busy" })
				var wantFailed []string
				if tt.lost && e.name == creator {
					wantFailed = []string{"transient"}
				}
				equalList(t, e.name+" failed deliveries", failed, wantFailed)
			}
			slices.Sort(wantLedger)
			if got, want := h.ledger.State(), strings.Join(wantLedger, "; "); got != want {
				t.Errorf("ledger:\n got %q\nwant %q", got, want)
			}
			if got := h.people.State(); got != adaCreated {
				t.Errorf("people: got %q, want %q", got, adaCreated)
			}
			if got := len(h.metrics.Outcomes()); got != events {
				t.Errorf("outcomes counted: got %d, want %d", got, events)
			}
			for _, c := range h.crm.RawCalls() {
				if c.Op == "update" && c.ID != "c1" {
					t.Errorf("update of %q: want only c1", c.ID)
				}
			}
		})
	}
}

// TestHandleConcurrentRedeliveries delivers one event many times at once:
// exactly one create, every other delivery absorbed as a duplicate, whether
// the deliveries reach one process or several replicas.
func TestHandleConcurrentRedeliveries(t *testing.T) {
	const n = 8
	for _, nReplicas := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d replicas", nReplicas), func(t *testing.T) {
			h := newHarness(t)
			svcs := replicas(t, h, nReplicas)
			creates, observe, release := holdFirstCreate(h)
			if nReplicas == 1 {
				// One process never turns itself away: its deliveries wait
				// in the process for the creator, so none can come back
				// while it is held.
				release()
			}
			var evs []*redelivered
			for i := range n {
				evs = append(evs, &redelivered{name: fmt.Sprintf("delivery-%d", i), msg: ev{}.at})
			}
			settleAll(t, h, svcs, evs, nil, observe)

			var outcomes []string
			for _, e := range evs {
				if e.verdict.ContactID != "c1" {
					t.Errorf("%s contact id: got %q, want c1", e.name, e.verdict.ContactID)
				}
				outcomes = append(outcomes, string(e.verdict.Outcome))
			}
			slices.Sort(outcomes)
			want := append([]string{"created"}, slices.Repeat([]string{"duplicate"}, n-1)...)
			equalList(t, "verdict outcomes", outcomes, want)
			if got := creates.Load(); got != 1 {
				t.Errorf("creates: got %d, want 1", got)
			}
			if got := h.ledger.State(); got != "intercom/evt-1: done created c1" {
				t.Errorf("ledger: got %q, want evt-1 done created c1", got)
			}
			if got := len(h.metrics.Outcomes()); got != n {
				t.Errorf("outcomes counted: got %d, want %d", got, n)
			}
			if nReplicas == 1 {
				equalList(t, "retries", h.metrics.Retries(), nil)
			}
		})
	}
}

// TestSetCatalogConcurrent swaps catalogs while messages are handled: every
// message must see one whole version, so its outcome and its label agree.
func TestSetCatalogConcurrent(t *testing.T) {
	h := newHarness(t)
	listed := &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_x": {Action: domain.ActionNothing}}}
	unlisted := &domain.Catalog{Campaigns: map[string]domain.Campaign{}}
	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				h.svc.SetCatalog(listed)
			} else {
				h.svc.SetCatalog(unlisted)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				h.svc.Handle(context.Background(), ev{ID: fmt.Sprintf("evt-%d-%d", w, i), Campaign: "camp_x"}.msg())
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-swapped
	for _, o := range h.metrics.Outcomes() {
		if o != "camp_x|nothing|nothing|" && o != "_unconfigured||unconfigured|" {
			t.Errorf("outcome: got %q, want camp_x|nothing|nothing| or _unconfigured||unconfigured|", o)
		}
	}
	if got := len(h.metrics.Outcomes()); got != 800 {
		t.Errorf("outcomes counted: got %d, want 800", got)
	}
}
