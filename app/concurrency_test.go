package app_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

// doneWatch reports when the service first asks for the context's Done
// channel. Nothing in Handle does so before it waits for the person's
// in-process turn, so a closed asked channel means the delivery has
// reached that wait.
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

// gateCreates makes every create on crm announce its event (its marker)
// on entered, then wait until that event's gate is closed; events without
// a gate pass.
func gateCreates(crm *memory.CRM, entered chan<- string, gates map[string]chan struct{}) {
	crm.Fault = func(c memory.Call) memory.Fault {
		if g, ok := gates[c.Contact.Marker]; ok && c.Op == "create" {
			entered <- c.Contact.Marker
			<-g
		}
		return memory.Fault{}
	}
}

// handleAsync runs Handle in a goroutine; the verdict arrives on the channel.
func handleAsync(ctx context.Context, svc *app.Service, m app.Message) <-chan app.Verdict {
	ch := make(chan app.Verdict, 1)
	go func() { ch <- svc.Handle(ctx, m) }()
	return ch
}

func TestHandleSerialisesPerEmail(t *testing.T) {
	t.Run("same email waits for the first event in the process; other emails and connections do not", func(t *testing.T) {
		h := newHarness(t)
		entered := make(chan string, 8)
		gates := map[string]chan struct{}{"e1": make(chan struct{})}
		gateCreates(h.crm, entered, gates)

		// e1 enters the CRM for Ada and stays inside Create.
		v1 := handleAsync(context.Background(), h.svc, ev{ID: "e1", Campaign: "camp_update"}.msg())
		if got := recv(t, entered, "e1 to enter Create"); got != "e1" {
			t.Fatalf("first to enter Create: got %s, want e1", got)
		}

		// e2, for Ada spelt differently, reaches the in-process wait.
		ctx2 := watchDone(context.Background())
		v2 := handleAsync(ctx2, h.svc, ev{ID: "e2", Campaign: "camp_update", Email: " ADA@example.COM"}.msg())
		recv(t, ctx2.asked, "e2 to wait for the person's turn")

		// e3 (Bob, same connection) and e4 (Ada, other connection) are not
		// held up by e1.
		checkVerdict(t, recv(t, handleAsync(context.Background(), h.svc, ev{ID: "e3", Campaign: "camp_update", Email: bob}.msg()), "e3's verdict"),
			createdC1)
		checkVerdict(t, recv(t, handleAsync(context.Background(), h.svc, ev{ID: "e4", Campaign: "camp_eu"}.msg()), "e4's verdict"),
			createdC1)

		// While e1 is still inside Create, e2 has touched neither the CRM
		// nor the ledger: it waits in the process rather than bouncing
		// through the broker as person_busy.
		equalList(t, "CRM calls while e1 is in flight", callsOf(h.crm),
			[]string{"find email:ada@example.com", "create lead ada@example.com", "find email:bob@example.com", "create lead bob@example.com"})
		if r, w := h.ledger.Ops(); r != 3 || w != 5 {
			t.Errorf("ledger operations while e1 is in flight: got %d reads %d writes, want 3 and 5 (e1's, e3's, e4's only)", r, w)
		}

		close(gates["e1"])
		checkVerdict(t, recv(t, v1, "e1's verdict"), app.Verdict{Outcome: domain.OutcomeCreated, ContactID: "c2"})
		// e2 then finds Ada's contact in the record e1 left and updates
		// it: one contact, never two creates.
		checkVerdict(t, recv(t, v2, "e2's verdict"), app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c2"})
		equalList(t, "CRM calls", callsOf(h.crm)[4:], []string{"update c2"})
		equalList(t, "retries", h.metrics.Retries(), nil)
		if got := personState(person(t, h, "intercom", ada)); got != adaRec+" contact=c2 | e1 created c2 | e2 updated c2" {
			t.Errorf("Ada's record: got %q", got)
		}
	})

	t.Run("a waiting delivery gives up when its context ends, without touching anything", func(t *testing.T) {
		h := newHarness(t)
		entered := make(chan string, 2)
		gates := map[string]chan struct{}{"e1": make(chan struct{})}
		gateCreates(h.crm, entered, gates)

		v1 := handleAsync(context.Background(), h.svc, ev{ID: "e1"}.msg())
		recv(t, entered, "e1 to enter Create")

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctx2 := watchDone(ctx)
		v2 := handleAsync(ctx2, h.svc, ev{ID: "e2"}.msg())
		recv(t, ctx2.asked, "e2 to wait for the person's turn")
		cancel()
		checkVerdict(t, recv(t, v2, "e2's verdict"), app.Verdict{Retry: true, Wait: true, Reason: app.CauseCancelled})
		if r, w := h.ledger.Ops(); r != 1 || w != 1 {
			t.Errorf("ledger operations while e1 holds Ada: got %d reads %d writes, want e1's 1 and 1", r, w)
		}

		close(gates["e1"])
		checkVerdict(t, recv(t, v1, "e1's verdict"), createdC1)
		equalList(t, "CRM calls", callsOf(h.crm), []string{"find email:ada@example.com", "create lead ada@example.com"})
		equalList(t, "outcomes", outcomeStrings(h.metrics.Outcomes()), []string{"camp_lead|create_lead|created"})
		equalList(t, "retries", h.metrics.Retries(), []string{"camp_lead|cancelled"})
		if got := ledgerState(h.ledger); got != adaC1+" | e1 created c1" {
			t.Errorf("ledger: got %q, want only e1 settled (a cancelled wait is no failure)", got)
		}
	})
}

// watchedLedger is the harness's ledger, telling waiters when a record
// may have changed (a write, or the clock moved).
type watchedLedger struct {
	*memory.Ledger
	mu      sync.Mutex
	changed chan struct{}
	// answer, when set, may replace a Put's answer after it ran (a lost
	// reply: the write landed, the caller is told it failed).
	answer func(n int, err error) error
	puts   int
}

func watchLedger(l *memory.Ledger) *watchedLedger {
	return &watchedLedger{Ledger: l, changed: make(chan struct{})}
}

func (l *watchedLedger) Put(ctx context.Context, p *ports.Person) error {
	err := l.Ledger.Put(ctx, p)
	l.mu.Lock()
	l.puts++
	n, answer := l.puts, l.answer
	l.mu.Unlock()
	if err == nil {
		l.poke()
	}
	if answer != nil {
		err = answer(n, err)
	}
	return err
}

// poke wakes every waiter.
func (l *watchedLedger) poke() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitFree blocks until Ada's record holds no pending create whose
// not-after is still ahead: what a person_busy verdict's Delay stands for.
func (l *watchedLedger) waitFree(t *testing.T, h *harness) {
	t.Helper()
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		p := person(t, h, "intercom", ada)
		if p.Pending == nil || !h.clock.Now().Before(p.Pending.NotAfter) {
			return
		}
		recv(t, ch, "Ada's pending create to end")
	}
}

// redelivered is one message of a concurrency test, delivered until it
// settles.
type redelivered struct {
	name    string
	msg     func(attempt int) app.Message
	verdict app.Verdict // the settling one
	retries []string    // the causes of the retries before it
}

// settleAll delivers every message from its own goroutine, delivery n of
// message i through replica (i + n) mod len(replicas), as a broker spreads
// redeliveries, and reports every verdict to observe. A person_busy
// answer waits until the person is free (standing in for its Delay); a
// lost compare-and-set race (ledger) is retried at once; after is called
// with every other retry and may act on it. settleAll returns when every
// message has settled, failing the test for one not settled within 200
// deliveries.
func settleAll(t *testing.T, h *harness, l *watchedLedger, replicas []*app.Service, msgs []*redelivered,
	observe func(name string, v app.Verdict), after func(name string, v app.Verdict) bool) {
	t.Helper()
	const maxDeliveries = 200
	var wg sync.WaitGroup
	for i, e := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 1; n <= maxDeliveries; n++ {
				v := replicas[(i+n)%len(replicas)].Handle(context.Background(), e.msg(n))
				observe(e.name, v)
				if !v.Retry {
					e.verdict = v
					return
				}
				e.retries = append(e.retries, v.Reason)
				switch {
				case v.Reason == app.CausePersonBusy:
					l.waitFree(t, h)
				case v.Reason == app.CauseLedger:
				case after != nil && after(e.name, v):
				default:
					t.Errorf("%s delivery %d: got retry %q (%v), want only waits", e.name, n, v.Reason, v.Err)
					return
				}
			}
			t.Errorf("%s: not settled after %d deliveries", e.name, maxDeliveries)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	recv(t, done, "every message to settle")
}

// replicas returns n Services sharing the harness's CRM, clock and the
// watched ledger, each with in-process turns of its own.
func replicas(t *testing.T, h *harness, l *watchedLedger, n int) []*app.Service {
	t.Helper()
	svcs := make([]*app.Service, n)
	for r := range svcs {
		cfg := h.config()
		cfg.Ledger, cfg.Owner = l, fmt.Sprintf("replica-%d", r)
		svcs[r] = h.replica(t, cfg)
	}
	return svcs
}

// holdFirstCreate makes the first create wait until another message's
// delivery has come back with any verdict (observe sees every verdict):
// the messages then truly overlap. With a record that excludes, that
// verdict is person_busy; with one that does not, it is whatever the
// other message did, and the test sees it. lose makes that create's
// response lost after it was applied.
func holdFirstCreate(h *harness, lose bool) (creator func() string, observe func(string, app.Verdict), release func()) {
	var first atomic.Value
	released := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	var n atomic.Int32
	h.crm.Fault = func(c memory.Call) memory.Fault {
		if c.Op != "create" || n.Add(1) != 1 {
			return memory.Fault{}
		}
		first.Store(c.Contact.Marker)
		<-released
		return memory.Fault{LoseResponse: lose}
	}
	creator = func() string { s, _ := first.Load().(string); return s }
	observe = func(name string, _ app.Verdict) {
		if c := creator(); c != "" && c != name {
			release()
		}
	}
	return creator, observe, release
}

func createsOf(crm *memory.CRM) int {
	n := 0
	for _, c := range crm.Calls() {
		if c.Op == "create" {
			n++
		}
	}
	return n
}

// TestReplicasCreateOnce delivers different events for one person
// concurrently through several replicas (Services sharing the ledger and
// the CRM): exactly one contact is created, every other event applies its
// duplicate policy to it, each event is counted once, and nobody's wait is
// a failure.
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
			l := watchLedger(h.ledger)
			svcs := replicas(t, h, l, nReplicas)
			creator, observe, _ := holdFirstCreate(h, tt.lost)
			// The creator's lost response: its not-after then passes
			// (the clock moves), and whoever comes next resolves it.
			after := func(name string, v app.Verdict) bool {
				if !tt.lost || name != creator() || v.Reason != app.CauseTransient {
					return false
				}
				h.clock.Advance(app.DefaultLease)
				l.poke()
				return true
			}
			policy := map[string]domain.Outcome{} // the outcome of an event that finds the contact
			var msgs []*redelivered
			for i := range events {
				e := ev{ID: fmt.Sprintf("evt-%d", i), Campaign: "camp_lead"}
				policy[e.ID] = domain.OutcomeSkipped
				if i%2 == 1 {
					e.Campaign = "camp_update"
					policy[e.ID] = domain.OutcomeUpdated
				}
				msgs = append(msgs, &redelivered{name: e.ID, msg: e.at})
			}

			settleAll(t, h, l, svcs, msgs, observe, after)

			if n := createsOf(h.crm); n != 1 {
				t.Errorf("creates: got %d, want exactly 1", n)
			}
			if got := contactsOf(h.crm); len(got) != 1 {
				t.Errorf("contacts: got %q, want exactly one", got)
			}
			p := person(t, h, "intercom", ada)
			if p.ContactID != "c1" || p.Pending != nil {
				t.Errorf("Ada's record: got %s, want contact c1 and nothing pending", personState(p))
			}
			for _, e := range msgs {
				want := policy[e.name]
				if e.name == creator() {
					want = domain.OutcomeCreated
				}
				if e.verdict.Outcome != want || e.verdict.ContactID != "c1" {
					t.Errorf("%s: got %s %q, want %s c1", e.name, e.verdict.Outcome, e.verdict.ContactID, want)
				}
				if r := eventOfRecord(p, e.name); r.Outcome != want || r.ContactID != "c1" || r.CountedBy == "" {
					t.Errorf("%s's record: got %s, want %s c1, counted", e.name, eventState(r), want)
				}
				// Only the creator's lost response is a failure; everyone
				// else only waited.
				failed := slices.DeleteFunc(slices.Clone(e.retries), func(r string) bool {
					return r == app.CausePersonBusy || r == app.CauseLedger
				})
				var wantFailed []string
				if tt.lost && e.name == creator() {
					wantFailed = []string{app.CauseTransient}
				}
				equalList(t, e.name+" failed deliveries", failed, wantFailed)
			}
			outcomesOnce(t, h, events)
			for _, c := range h.crm.Calls() {
				if c.Op == "update" && c.ID != "c1" {
					t.Errorf("update of %q: want only c1", c.ID)
				}
			}
		})
	}
}

func eventOfRecord(p ports.Person, id string) ports.EventRecord {
	for _, r := range p.Events {
		if r.ID == id {
			return r
		}
	}
	return ports.EventRecord{ID: id}
}

// outcomesOnce pins that n messages were counted n times.
func outcomesOnce(t *testing.T, h *harness, n int) {
	t.Helper()
	if got := len(h.metrics.Outcomes()); got != n {
		t.Errorf("outcomes counted: got %d (%v), want %d, one per message", got, outcomeStrings(h.metrics.Outcomes()), n)
	}
}

// TestHandleConcurrentRedeliveries delivers one event many times at once:
// exactly one create, every other delivery absorbed as a duplicate,
// whether the deliveries reach one process or several replicas.
func TestHandleConcurrentRedeliveries(t *testing.T) {
	const n = 8
	for _, nReplicas := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d replicas", nReplicas), func(t *testing.T) {
			h := newHarness(t)
			l := watchLedger(h.ledger)
			svcs := replicas(t, h, l, nReplicas)
			_, observe, release := holdFirstCreate(h, false)
			if nReplicas == 1 {
				// One process never turns itself away: its deliveries
				// wait in the process for the creator, so none can come
				// back while it is held.
				release()
			}
			var msgs []*redelivered
			for i := range n {
				msgs = append(msgs, &redelivered{name: fmt.Sprintf("delivery-%d", i), msg: ev{}.at})
			}
			settleAll(t, h, l, svcs, msgs, observe, nil)

			var outcomes []string
			for _, e := range msgs {
				if e.verdict.ContactID != "c1" {
					t.Errorf("%s contact id: got %q, want c1", e.name, e.verdict.ContactID)
				}
				outcomes = append(outcomes, string(e.verdict.Outcome))
			}
			slices.Sort(outcomes)
			equalList(t, "verdict outcomes", outcomes, append([]string{"created"}, slices.Repeat([]string{"duplicate"}, n-1)...))
			if got := createsOf(h.crm); got != 1 {
				t.Errorf("creates: got %d, want 1", got)
			}
			if got := ledgerState(h.ledger); got != evt1C1 {
				t.Errorf("ledger: got %q, want %q", got, evt1C1)
			}
			outcomesOnce(t, h, n)
			if nReplicas == 1 {
				equalList(t, "retries", h.metrics.Retries(), nil)
			}
		})
	}
}

// TestStaleWriter pins the fencing: every write is a compare-and-set on
// the revision read, so a worker whose read went stale writes nothing it
// decided from it; it reads again and decides again, or merges an outcome
// whose CRM effect already happened into what it finds.
func TestStaleWriter(t *testing.T) {
	// meanwhile writes rec as another worker would, between this worker's
	// read and its write.
	meanwhile := func(t *testing.T, h *harness, edit func(p *ports.Person)) func(memory.Call) {
		return func(memory.Call) {
			p := person(t, h, "intercom", ada)
			edit(&p)
			if err := h.ledger.Put(context.Background(), &p); err != nil {
				t.Errorf("the other worker's write: %v", err)
			}
		}
	}
	tests := []struct {
		name       string
		setup      func(t *testing.T, h *harness)
		msg        app.Message
		want       app.Verdict
		wantCRM    []string
		wantLedger string
		wantOps    [2]int64 // reads, writes (the other worker's included)
	}{
		{
			name: "another worker's create recorded while this one searched: its own pending write loses, nothing is sent, it waits",
			setup: func(t *testing.T, h *harness) {
				faults(h).do("find", meanwhile(t, h, func(p *ports.Person) { p.Pending = pendingBy("evt-0", now.Add(5*time.Second)) }))
			},
			msg:        ev{}.msg(),
			want:       busyFor(5 * time.Second),
			wantCRM:    []string{"find email:ada@example.com"},
			wantLedger: adaRec + " pending=evt-0@10:00:10",
			wantOps:    [2]int64{1 + 1 + 1, 1 + 1}, // read, other's read, read again; lost put, other's put
		},
		{
			name: "the person became known while this one searched: it decides again from the record, with no create",
			setup: func(t *testing.T, h *harness) {
				h.crm.Seed(domain.Match{ID: "c7", Role: domain.RoleLead, Email: ada})
				faults(h).do("find", meanwhile(t, h, func(p *ports.Person) {
					p.ContactID = "c7"
					p.Events = append(p.Events, ports.EventRecord{ID: "evt-0", Outcome: domain.OutcomeUpdated, ContactID: "c7", At: now, CountedBy: seeded})
				}))
				// The CRM's search missed the contact (it lags).
				h.crm.SearchLag = time.Hour
			},
			msg:        ev{}.msg(),
			want:       app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"},
			wantCRM:    []string{"find email:ada@example.com"},
			wantLedger: adaRec + " contact=c7 | evt-0 updated c7 | evt-1 skipped c7",
			wantOps:    [2]int64{3, 3},
		},
		{
			name: "another event settled while this one updated: the outcome merges into the newer record, losing nothing",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{ContactID: "c7"})
				h.crm.Seed(domain.Match{ID: "c7", Role: domain.RoleLead, Email: ada})
				faults(h).do("update", meanwhile(t, h, func(p *ports.Person) {
					p.Events = append(p.Events, ports.EventRecord{ID: "evt-2", Outcome: domain.OutcomeSkipped, ContactID: "c7", At: now, CountedBy: seeded})
				}))
			},
			msg:        ev{Campaign: "camp_update"}.msg(),
			want:       app.Verdict{Outcome: domain.OutcomeUpdated, ContactID: "c7"},
			wantCRM:    []string{"update c7"},
			wantLedger: adaRec + " contact=c7 | evt-2 skipped c7 | evt-1 updated c7",
			wantOps:    [2]int64{1 + 1 + 1 + 1, 1 + 1 + 1 + 1}, // seed read, read, other's read, read again; seed, other's, lost, merged
		},
		{
			name: "another delivery of the same event settled it while this one updated: this one is a duplicate, counted once",
			setup: func(t *testing.T, h *harness) {
				seedPerson(t, h, ports.Person{ContactID: "c7"})
				h.crm.Seed(domain.Match{ID: "c7", Role: domain.RoleLead, Email: ada})
				faults(h).do("update", meanwhile(t, h, func(p *ports.Person) {
					p.Events = append(p.Events, ports.EventRecord{ID: "evt-1", Outcome: domain.OutcomeUpdated, ContactID: "c7", At: now, CountedBy: "replica-9#4"})
				}))
			},
			msg:        ev{Campaign: "camp_update"}.msg(),
			want:       app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: "c7"},
			wantCRM:    []string{"update c7"},
			wantLedger: adaRec + " contact=c7 | evt-1 updated c7",
			wantOps:    [2]int64{4, 3},
		},
		{
			name: "a record that keeps changing: the delivery gives up after a bound, as a wait, having sent nothing",
			setup: func(_ *testing.T, h *harness) {
				h.ledger.Fault = func(op string) error {
					if op == "put" {
						return ports.ErrConflict
					}
					return nil
				}
			},
			msg:     ev{}.msg(),
			want:    waitLedger,
			wantCRM: slices.Repeat([]string{"find email:ada@example.com"}, 8),
			wantOps: [2]int64{8, 8},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			h.crm.Reset()
			v := h.svc.Handle(context.Background(), tt.msg)
			checkVerdict(t, v, tt.want)
			countedOnce(t, nil, h, v)
			equalList(t, "CRM calls", callsOf(h.crm), tt.wantCRM)
			if got := ledgerState(h.ledger); got != tt.wantLedger {
				t.Errorf("ledger:\n got %q\nwant %q", got, tt.wantLedger)
			}
			if r, w := h.ledger.Ops(); r != tt.wantOps[0] || w != tt.wantOps[1] {
				t.Errorf("ledger operations: got %d reads %d writes, want %d and %d", r, w, tt.wantOps[0], tt.wantOps[1])
			}
		})
	}
}

// TestLostWriteAnswer: a write that landed although its answer was lost
// is read back, and the delivery goes on as if it had been answered: the
// event is counted once and its redelivery is a duplicate.
func TestLostWriteAnswer(t *testing.T) {
	tests := []struct {
		name   string
		person ports.Person
		msg    app.Message
		lose   int // which Put's answer is lost
		want   app.Verdict
	}{
		{name: "the skip's write", person: ports.Person{ContactID: "c7"}, msg: ev{}.msg(), lose: 1,
			want: app.Verdict{Outcome: domain.OutcomeSkipped, ContactID: "c7"}},
		{name: "the pending create's write", msg: ev{}.msg(), lose: 1, want: createdC1},
		{name: "the created outcome's write", msg: ev{}.msg(), lose: 2, want: createdC1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.person.ContactID != "" {
				seedPerson(t, h, tt.person)
			}
			l := watchLedger(h.ledger)
			l.answer = func(n int, err error) error {
				if n == tt.lose && err == nil {
					return errors.New("connection reset after the write was sent")
				}
				return err
			}
			svc := replicas(t, h, l, 1)[0]
			v := svc.Handle(context.Background(), tt.msg)
			checkVerdict(t, v, tt.want)
			countedOnce(t, nil, h, v)
			before := h.metrics.Outcomes()
			v = svc.Handle(context.Background(), ev{}.at(2))
			checkVerdict(t, v, app.Verdict{Outcome: domain.OutcomeDuplicate, ContactID: tt.want.ContactID})
			countedOnce(t, before, h, v)
			if n := createsOf(h.crm); n > 1 {
				t.Errorf("creates: got %d, want at most 1", n)
			}
		})
	}
}

// TestSetCatalogConcurrent swaps catalogs while messages are handled:
// every message sees one whole version, so its outcome and its label
// agree.
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
	for _, o := range outcomeStrings(h.metrics.Outcomes()) {
		if o != "camp_x|nothing|nothing" && o != "_unconfigured||unconfigured" {
			t.Errorf("outcome: got %q, want camp_x|nothing|nothing or _unconfigured||unconfigured", o)
		}
	}
	outcomesOnce(t, h, 800)
}
