// Package conformance holds the port contracts as test suites: one table of
// scenarios per port, run against every implementation (the real adapters
// and the in-memory ones), in the manner of Watermill's shared Pub/Sub
// tests. An implementation that passes its suite keeps what the
// application relies on.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Ledger runs the ports.Ledger contract against the ledgers newLedger
// returns; each call must return an empty ledger, and every ledger it
// returns for one test must share one store (two replicas of the service).
func Ledger(t *testing.T, newLedger func(t *testing.T) (a, b ports.Ledger)) {
	t.Helper()
	ctx := context.Background()
	at := time.UnixMilli(1_800_000_000_000)
	full := func(conn, email string) ports.Person {
		return ports.Person{
			Connection: conn, Email: email, ContactID: "c1",
			Pending: &ports.PendingCreate{EventID: "e2", Owner: "host-1", NotAfter: at.Add(10 * time.Second), ExternalID: "usr_1"},
			Events: []ports.EventRecord{
				{ID: "e1", Outcome: domain.OutcomeCreated, ContactID: "c1", At: at},
				{ID: "e3", Failures: 2, FirstFailure: at, At: at.Add(time.Second), Reason: "transient"},
				{ID: "e4", Outcome: domain.OutcomeDeadLettered, At: at, Reason: "crm_rejected", ReplayedFrom: "17"},
				{ID: "e5", Outcome: domain.OutcomeCreated, ContactID: "c1", At: at, CountedBy: "host-1#7", FailedBy: []string{"host-2#3", "host-1#5"}},
			},
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, a, b ports.Ledger)
	}{
		{"an unknown person reads as revision 0 with nothing known", func(t *testing.T, a, _ ports.Ledger) {
			p, err := a.Person(ctx, "main", "ada@example.com")
			if err != nil {
				t.Fatalf("Person: %v", err)
			}
			if p.Revision != 0 || p.ContactID != "" || p.Pending != nil || len(p.Events) != 0 {
				t.Errorf("got %+v, want the zero record", p)
			}
			if p.Connection != "main" || p.Email != "ada@example.com" {
				t.Errorf("got connection %q email %q, want the ones asked for", p.Connection, p.Email)
			}
		}},
		{"what is put is read back whole, by another replica", func(t *testing.T, a, b ports.Ledger) {
			p := full("main", "ada@example.com")
			if err := a.Put(ctx, &p); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if p.Revision == 0 {
				t.Fatal("Put left Revision 0, want the new revision")
			}
			got, err := b.Person(ctx, "main", "ada@example.com")
			if err != nil {
				t.Fatalf("Person: %v", err)
			}
			if d := diff(got, p); d != "" {
				t.Errorf("read back: %s", d)
			}
		}},
		{"a put at a stale revision is a conflict and writes nothing", func(t *testing.T, a, b ports.Ledger) {
			p := full("main", "ada@example.com")
			if err := a.Put(ctx, &p); err != nil {
				t.Fatal(err)
			}
			stale := p
			q, _ := b.Person(ctx, "main", "ada@example.com")
			q.ContactID = "c-new"
			if err := b.Put(ctx, &q); err != nil {
				t.Fatalf("Put at the current revision: %v", err)
			}
			stale.ContactID = "c-stale"
			if err := a.Put(ctx, &stale); !errors.Is(err, ports.ErrConflict) {
				t.Fatalf("Put at a stale revision: got %v, want ErrConflict", err)
			}
			got, _ := a.Person(ctx, "main", "ada@example.com")
			if got.ContactID != "c-new" {
				t.Errorf("contact: got %q, want c-new (the stale write must not land)", got.ContactID)
			}
		}},
		{"a put at revision 0 of a person who exists is a conflict", func(t *testing.T, a, b ports.Ledger) {
			p := ports.Person{Connection: "main", Email: "ada@example.com", ContactID: "c1"}
			if err := a.Put(ctx, &p); err != nil {
				t.Fatal(err)
			}
			q := ports.Person{Connection: "main", Email: "ada@example.com", ContactID: "c2"}
			if err := b.Put(ctx, &q); !errors.Is(err, ports.ErrConflict) {
				t.Fatalf("got %v, want ErrConflict", err)
			}
		}},
		{"of two racing writers at one revision exactly one wins", func(t *testing.T, a, b ports.Ledger) {
			for round := range 20 {
				email := fmt.Sprintf("p%d@example.com", round)
				base := ports.Person{Connection: "main", Email: email}
				if round%2 == 1 { // a known person: compare-and-set; else a create race
					if err := a.Put(ctx, &base); err != nil {
						t.Fatal(err)
					}
				}
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i, l := range []ports.Ledger{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						p := base
						p.ContactID = fmt.Sprintf("c%d", i)
						errs[i] = l.Put(ctx, &p)
					}()
				}
				wg.Wait()
				won := 0
				for _, err := range errs {
					switch {
					case err == nil:
						won++
					case !errors.Is(err, ports.ErrConflict):
						t.Fatalf("round %d: got %v, want nil or ErrConflict", round, err)
					}
				}
				if won != 1 {
					t.Fatalf("round %d: %d writers won, want exactly 1 (%v)", round, won, errs)
				}
			}
		}},
		{"people are apart by connection and by email", func(t *testing.T, a, b ports.Ledger) {
			for _, k := range [][2]string{{"main", "ada@example.com"}, {"eu", "ada@example.com"}, {"main", "bob@example.com"}} {
				p := ports.Person{Connection: k[0], Email: k[1], ContactID: k[0] + "/" + k[1]}
				if err := a.Put(ctx, &p); err != nil {
					t.Fatalf("Put %v: %v", k, err)
				}
			}
			for _, k := range [][2]string{{"main", "ada@example.com"}, {"eu", "ada@example.com"}, {"main", "bob@example.com"}} {
				got, err := b.Person(ctx, k[0], k[1])
				if err != nil || got.ContactID != k[0]+"/"+k[1] {
					t.Errorf("Person %v: got %q, %v", k, got.ContactID, err)
				}
			}
		}},
		{"a cancelled context fails the call", func(t *testing.T, a, _ ports.Ledger) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := a.Person(cctx, "main", "ada@example.com"); err == nil {
				t.Error("Person: got no error, want the context's")
			}
			p := ports.Person{Connection: "main", Email: "ada@example.com"}
			if err := a.Put(cctx, &p); err == nil || errors.Is(err, ports.ErrConflict) {
				t.Errorf("Put: got %v, want the context's error", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newLedger(t)
			tt.run(t, a, b)
		})
	}
}

// diff describes how two records differ, "" when they agree (times to the
// millisecond, the ledger's resolution).
func diff(got, want ports.Person) string {
	g, w := describe(got), describe(want)
	if g != w {
		return fmt.Sprintf("\n got %s\nwant %s", g, w)
	}
	return ""
}

func describe(p ports.Person) string {
	s := fmt.Sprintf("rev=%d contact=%q", p.Revision, p.ContactID)
	if p.Pending != nil {
		s += fmt.Sprintf(" pending={%s %s %d %s}", p.Pending.EventID, p.Pending.Owner, p.Pending.NotAfter.UnixMilli(), p.Pending.ExternalID)
	}
	for _, e := range p.Events {
		s += fmt.Sprintf(" [%s %s %s %d f=%d ff=%d %s %s %s %s]", e.ID, e.Outcome, e.ContactID, e.At.UnixMilli(), e.Failures,
			ms(e.FirstFailure), e.Reason, e.ReplayedFrom, e.CountedBy, strings.Join(e.FailedBy, ","))
	}
	return s
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
