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

func TestClaimLifecycle(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	b := newLedger(t, js, clk, "b") // a second replica on the same bucket
	ctx := context.Background()

	type step struct {
		name string
		run  func(t *testing.T)
	}
	var claimA ports.Claim
	steps := []step{
		{"first claim succeeds", func(t *testing.T) {
			c, err := a.Claim(ctx, "main/evt-1")
			if err != nil || c.Done != nil {
				t.Fatalf("got %+v, %v; want a fresh claim", c, err)
			}
			claimA = c
		}},
		{"second claimant is refused while the lease lives", func(t *testing.T) {
			if _, err := b.Claim(ctx, "main/evt-1"); !errors.Is(err, ports.ErrClaimHeld) {
				t.Fatalf("got %v, want ErrClaimHeld", err)
			}
		}},
		{"another event is independent", func(t *testing.T) {
			if _, err := b.Claim(ctx, "main/evt-2"); err != nil {
				t.Fatalf("got %v, want nil", err)
			}
		}},
		{"complete records the result", func(t *testing.T) {
			rec := ports.Record{Outcome: domain.OutcomeCreated, ContactID: "c1", At: clk.Now()}
			if err := a.Complete(ctx, claimA, rec); err != nil {
				t.Fatal(err)
			}
		}},
		{"a later claim sees the result", func(t *testing.T) {
			c, err := b.Claim(ctx, "main/evt-1")
			if err != nil || c.Done == nil {
				t.Fatalf("got %+v, %v; want Done", c, err)
			}
			if c.Done.Outcome != domain.OutcomeCreated || c.Done.ContactID != "c1" {
				t.Errorf("got %+v, want created c1", *c.Done)
			}
		}},
		{"the same event on another connection is independent", func(t *testing.T) {
			c, err := b.Claim(ctx, "other/evt-1")
			if err != nil || c.Done != nil {
				t.Fatalf("got %+v, %v; want a fresh claim", c, err)
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, s.run)
	}
}

func TestExpiredClaimIsTakenOverAndTheOldHolderCannotRecord(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	b := newLedger(t, js, clk, "b")
	ctx := context.Background()

	old, err := a.Claim(ctx, "main/evt-9")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // a "crashed": its lease ran out
	taken, err := b.Claim(ctx, "main/evt-9")
	if err != nil {
		t.Fatalf("takeover: got %v, want nil", err)
	}
	if err := a.Complete(ctx, old, ports.Record{Outcome: domain.OutcomeCreated, At: clk.Now()}); !errors.Is(err, ports.ErrClaimLost) {
		t.Errorf("old holder complete: got %v, want ErrClaimLost", err)
	}
	if err := b.Complete(ctx, taken, ports.Record{Outcome: domain.OutcomeUpdated, ContactID: "c9", At: clk.Now()}); err != nil {
		t.Errorf("new holder complete: got %v, want nil", err)
	}
	rec, ok, err := a.Lookup(ctx, "main/evt-9")
	if err != nil || !ok || rec.Outcome != domain.OutcomeUpdated {
		t.Errorf("lookup: got %+v %v %v, want updated", rec, ok, err)
	}
}

func TestReleaseLetsTheNextAttemptClaimAtOnce(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	ctx := context.Background()
	for i := range 3 { // claim → release, repeatedly: creates over delete markers
		c, err := a.Claim(ctx, "main/evt-r")
		if err != nil {
			t.Fatalf("round %d: claim: %v", i, err)
		}
		if err := a.Release(ctx, c); err != nil {
			t.Fatalf("round %d: release: %v", i, err)
		}
	}
	if _, ok, _ := a.Lookup(ctx, "main/evt-r"); ok {
		t.Error("released event looks applied")
	}
}

func TestConcurrentClaimsHaveExactlyOneWinner(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	ctx := context.Background()
	const n = 16
	var winners, held atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		l := newLedger(t, js, clk, "r"+string(rune('a'+i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Claim(ctx, "main/contended")
			switch {
			case err == nil:
				winners.Add(1)
			case errors.Is(err, ports.ErrClaimHeld):
				held.Add(1)
			default:
				t.Errorf("claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if winners.Load() != 1 || held.Load() != n-1 {
		t.Errorf("got %d winners and %d refused, want 1 and %d", winners.Load(), held.Load(), n-1)
	}
}

func TestPeopleRememberAndForget(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	l := newLedger(t, js, clk, "a")
	ctx := context.Background()
	ada := domain.Identity{Email: "ada@example.com"}
	adaUser := domain.Identity{Email: "ada@example.com", ExternalID: "usr_1"}

	if _, ok, err := l.Contact(ctx, "main", ada); ok || err != nil {
		t.Fatalf("unknown person: got ok=%v err=%v", ok, err)
	}
	if err := l.Remember(ctx, "main", ada, "c-lead"); err != nil {
		t.Fatal(err)
	}
	if err := l.Remember(ctx, "main", adaUser, "c-user"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		conn string
		who  domain.Identity
		want string
	}{
		{"by email", "main", ada, "c-lead"},
		{"by external id", "main", adaUser, "c-user"},
		{"other connection", "eu", ada, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := l.Contact(ctx, tt.conn, tt.who)
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if err := l.Remember(ctx, "main", ada, ""); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := l.Contact(ctx, "main", ada); ok {
		t.Errorf("forgotten person: got %q, want none", got)
	}
}

func TestNewIsIdempotent(t *testing.T) {
	js := newJetStream(t)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	a := newLedger(t, js, clk, "a")
	c, err := a.Claim(context.Background(), "main/evt-keep")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Complete(context.Background(), c, ports.Record{Outcome: domain.OutcomeSkipped, At: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	b := newLedger(t, js, clk, "b") // provisioning again keeps the data
	if _, ok, err := b.Lookup(context.Background(), "main/evt-keep"); !ok || err != nil {
		t.Errorf("after re-provisioning: got ok=%v err=%v, want the record", ok, err)
	}
}
