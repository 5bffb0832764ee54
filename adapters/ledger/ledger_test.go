package ledger_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// newJetStream starts a real embedded JetStream server for one test.
func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newLedger(t *testing.T, js jetstream.JetStream, clk *clock, owner string) *ledger.Ledger {
	t.Helper()
	l, err := ledger.New(context.Background(), js, ledger.Config{Lease: time.Minute, Owner: owner, Now: clk.Now})
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	return l
}

func TestEventRecords(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	b := newLedger(t, js, clk, "b") // a second replica on the same bucket
	ctx := context.Background()

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"unknown event has no record", func(t *testing.T) {
			r, err := a.Event(ctx, "main/evt-1")
			if err != nil || r.Done != nil || r.Failures != 0 {
				t.Fatalf("got %+v, %v; want the zero record", r, err)
			}
		}},
		{"failures are counted with the first failure time", func(t *testing.T) {
			first := clk.Now()
			if _, err := a.Failed(ctx, "main/evt-1", first); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
			r, err := b.Failed(ctx, "main/evt-1", clk.Now())
			if err != nil || r.Failures != 2 || !r.FirstFailure.Equal(first) {
				t.Fatalf("got %+v, %v; want 2 failures since %v", r, err, first)
			}
		}},
		{"done is seen by every replica", func(t *testing.T) {
			if err := a.Done(ctx, "main/evt-1", ports.Record{Outcome: domain.OutcomeCreated, ContactID: "c1", At: clk.Now()}); err != nil {
				t.Fatal(err)
			}
			r, err := b.Event(ctx, "main/evt-1")
			if err != nil || r.Done == nil || r.Done.Outcome != domain.OutcomeCreated || r.Done.ContactID != "c1" {
				t.Fatalf("got %+v, %v; want done created c1", r, err)
			}
		}},
		{"the same event on another connection is independent", func(t *testing.T) {
			r, err := b.Event(ctx, "other/evt-1")
			if err != nil || r.Done != nil {
				t.Fatalf("got %+v, %v; want no record", r, err)
			}
		}},
		{"clear never forgets an applied event", func(t *testing.T) {
			if err := a.Clear(ctx, "main/evt-1"); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := b.Lookup(ctx, "main/evt-1"); !ok || err != nil {
				t.Fatalf("got ok=%v err=%v, want the applied record kept", ok, err)
			}
		}},
		{"clear forgets failures", func(t *testing.T) {
			if _, err := a.Failed(ctx, "main/evt-3", clk.Now()); err != nil {
				t.Fatal(err)
			}
			if err := a.Clear(ctx, "main/evt-3"); err != nil {
				t.Fatal(err)
			}
			if err := a.Clear(ctx, "main/never-seen"); err != nil {
				t.Fatalf("clearing an unknown event: %v", err)
			}
			if r, err := b.Event(ctx, "main/evt-3"); r.Failures != 0 || err != nil {
				t.Fatalf("got %+v, %v; want no failures", r, err)
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, s.run)
	}
}

func TestPersonLock(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	b := newLedger(t, js, clk, "b")
	ctx := context.Background()

	p, err := a.Lock(ctx, "main", "ada@example.com")
	if err != nil || p.ContactID != "" || p.Pending != nil {
		t.Fatalf("first lock: got %+v, %v; want an empty locked record", p, err)
	}
	if _, err := b.Lock(ctx, "main", "ada@example.com"); !errors.Is(err, ports.ErrClaimHeld) {
		t.Fatalf("second lock: got %v, want ErrClaimHeld", err)
	}
	if _, err := b.Lock(ctx, "eu", "ada@example.com"); err != nil {
		t.Fatalf("same email, other connection: got %v, want a lock", err)
	}
	p.Pending = &ports.PendingCreate{EventID: "evt-1", At: clk.Now()}
	if err := a.Save(ctx, &p); err != nil {
		t.Fatalf("save: %v", err)
	}
	if _, err := b.Lock(ctx, "main", "ada@example.com"); !errors.Is(err, ports.ErrClaimHeld) {
		t.Fatalf("lock after save: got %v, want ErrClaimHeld (save keeps the lock)", err)
	}
	p.Pending, p.ContactID = nil, "c1"
	if err := a.Unlock(ctx, p); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	q, err := b.Lock(ctx, "main", "ada@example.com")
	if err != nil || q.ContactID != "c1" || q.Pending != nil {
		t.Fatalf("lock after unlock: got %+v, %v; want contact c1 and no pending create", q, err)
	}
	if got, err := a.PersonContact(ctx, "main", "ada@example.com"); err != nil || got != "c1" {
		t.Errorf("PersonContact: got %q, %v; want c1", got, err)
	}
}

func TestExpiredPersonLockIsTakenOverAndTheOldHolderCannotWrite(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	b := newLedger(t, js, clk, "b")
	ctx := context.Background()

	old, err := a.Lock(ctx, "main", "grace@example.com")
	if err != nil {
		t.Fatal(err)
	}
	old.Pending = &ports.PendingCreate{EventID: "evt-9", At: clk.Now()}
	if err := a.Save(ctx, &old); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // a "crashed": its lease ran out
	taken, err := b.Lock(ctx, "main", "grace@example.com")
	if err != nil {
		t.Fatalf("takeover: got %v, want a lock", err)
	}
	if taken.Pending == nil || taken.Pending.EventID != "evt-9" {
		t.Errorf("takeover: got pending %+v, want the crashed holder's pending create evt-9", taken.Pending)
	}
	if err := a.Save(ctx, &old); !errors.Is(err, ports.ErrClaimLost) {
		t.Errorf("old holder save: got %v, want ErrClaimLost", err)
	}
	if err := a.Unlock(ctx, old); !errors.Is(err, ports.ErrClaimLost) {
		t.Errorf("old holder unlock: got %v, want ErrClaimLost", err)
	}
	if err := b.Unlock(ctx, taken); err != nil {
		t.Errorf("new holder unlock: %v", err)
	}
}

func TestConcurrentLocksHaveExactlyOneWinner(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	ctx := context.Background()
	tests := []struct {
		name    string
		prepare func(t *testing.T, l *ledger.Ledger)
	}{
		{"new person (create race)", func(*testing.T, *ledger.Ledger) {}},
		{"known person (compare-and-set race)", func(t *testing.T, l *ledger.Ledger) {
			p, err := l.Lock(ctx, "main", "known@example.com")
			if err != nil {
				t.Fatal(err)
			}
			p.ContactID = "c-known"
			if err := l.Unlock(ctx, p); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			email := "new@example.com"
			if tt.name != tests[0].name {
				email = "known@example.com"
			}
			tt.prepare(t, newLedger(t, js, clk, "prep"))
			const n = 16
			var winners, held atomic.Int32
			var wg sync.WaitGroup
			for i := range n {
				l := newLedger(t, js, clk, "r"+string(rune('a'+i)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := l.Lock(ctx, "main", email)
					switch {
					case err == nil:
						winners.Add(1)
					case errors.Is(err, ports.ErrClaimHeld):
						held.Add(1)
					default:
						t.Errorf("lock: %v", err)
					}
				}()
			}
			wg.Wait()
			if winners.Load() != 1 || held.Load() != n-1 {
				t.Errorf("got %d winners and %d refused, want 1 and %d", winners.Load(), held.Load(), n-1)
			}
		})
	}
}

func TestNewIsIdempotent(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	if err := a.Done(context.Background(), "main/evt-keep", ports.Record{Outcome: domain.OutcomeSkipped, At: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	b := newLedger(t, js, clk, "b") // provisioning again keeps the data
	if _, ok, err := b.Lookup(context.Background(), "main/evt-keep"); !ok || err != nil {
		t.Errorf("after re-provisioning: got ok=%v err=%v, want the record", ok, err)
	}
}
