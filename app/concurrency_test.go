package app_test

import (
	"context"
	"fmt"
	"slices"
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
		return crm.insert(c), nil
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

		// e2, for Ada spelt differently, reaches the person's lock.
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

		// While e1 is still inside Create, e2 has not touched the CRM.
		equalList(t, "e2's CRM calls while e1 is in flight", h.crm.Calls("e2"), nil)

		close(gates["e1"])
		checkVerdict(t, recv(t, v1, "e1's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c2"})
		// e2 then finds Ada's contact (remembered by e1) and updates it:
		// one contact, never two creates.
		checkVerdict(t, recv(t, v2, "e2's verdict"), app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c2"})
		equalList(t, "e1's CRM calls", h.crm.Calls("e1"), []string{"find email:ada@example.com", "create lead ada@example.com"})
		equalList(t, "e2's CRM calls", h.crm.Calls("e2"), []string{"update c2"})
		if e2EarlyUpdate.Load() {
			t.Error("e2 entered the CRM before e1's create returned")
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
		if got := h.ledger.Calls(); len(got) != 1 {
			t.Errorf("ledger calls while e1 holds Ada: got %q, want only e1's claim", got)
		}

		close(gates["e1"])
		checkVerdict(t, recv(t, v1, "e1's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c1"})
		equalList(t, "outcomes", h.metrics.Outcomes(), []string{"camp_lead|create_lead|created|"})
		equalList(t, "retries", h.metrics.Retries(), []string{"camp_lead|cancelled"})
	})
}

// TestHandleConcurrentRedeliveries delivers one event many times at once:
// exactly one create, every other delivery absorbed as a duplicate.
func TestHandleConcurrentRedeliveries(t *testing.T) {
	const n = 8
	h := newHarness(t)
	var wg sync.WaitGroup
	verdicts := make([]app.Verdict, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			verdicts[i] = h.svc.Handle(context.Background(), ev{}.msg())
		}()
	}
	wg.Wait()

	var outcomes []string
	for _, v := range verdicts {
		if v.Retry {
			t.Errorf("verdict: got retry %q (%v), want created or duplicate", v.Reason, v.Err)
		}
		if v.ContactID != "c1" {
			t.Errorf("contact id: got %q, want c1", v.ContactID)
		}
		outcomes = append(outcomes, string(v.Outcome))
	}
	slices.Sort(outcomes)
	want := append([]string{"created"}, slices.Repeat([]string{"duplicate"}, n-1)...)
	equalList(t, "verdict outcomes", outcomes, want)
	equalList(t, "CRM calls", h.crm.Calls(""), []string{"find email:ada@example.com", "create lead ada@example.com"})
	if got := len(h.metrics.Outcomes()); got != n {
		t.Errorf("outcomes counted: got %d, want %d", got, n)
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
