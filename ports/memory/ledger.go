// Package memory holds in-memory implementations of the ports: a ledger,
// a CRM modelled on Intercom's documented behaviour, a dead-letter store
// and metrics. They keep every port's contract (the conformance suites in
// ports/conformance run against them as against the real adapters), so the
// application's tests, its deterministic simulation and the bench use them
// instead of private fakes. Like net/http/httptest beside net/http, they
// live beside the ports and import only the domain, the ports and the
// standard library.
package memory

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/referrer-sync/referrer-sync/ports"
)

// Ledger is an in-memory ports.Ledger.
type Ledger struct {
	// Fault, when set, is asked before every operation ("person" or
	// "put"); a non-nil error fails the operation without effect.
	Fault func(op string) error

	mu      sync.Mutex
	records map[string]ports.Person
	rev     uint64
	reads   atomic.Int64
	writes  atomic.Int64
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{records: map[string]ports.Person{}} }

func key(connection, email string) string { return connection + "\x00" + email }

// clone returns a deep copy, so no caller shares a record with the store.
func clone(p ports.Person) ports.Person {
	if p.Pending != nil {
		pend := *p.Pending
		p.Pending = &pend
	}
	p.Events = slices.Clone(p.Events)
	return p
}

// Person implements ports.Ledger.
func (l *Ledger) Person(ctx context.Context, connection, email string) (ports.Person, error) {
	l.reads.Add(1)
	if err := ctx.Err(); err != nil {
		return ports.Person{}, err
	}
	if l.Fault != nil {
		if err := l.Fault("person"); err != nil {
			return ports.Person{}, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.records[key(connection, email)]
	if !ok {
		return ports.Person{Connection: connection, Email: email}, nil
	}
	return clone(p), nil
}

// Put implements ports.Ledger: a compare-and-set on p.Revision.
func (l *Ledger) Put(ctx context.Context, p *ports.Person) error {
	l.writes.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.Fault != nil {
		if err := l.Fault("put"); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key(p.Connection, p.Email)
	if l.records[k].Revision != p.Revision {
		return ports.ErrConflict
	}
	l.rev++
	p.Revision = l.rev
	l.records[k] = clone(*p)
	return nil
}

// All returns a copy of every record.
func (l *Ledger) All() []ports.Person {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ports.Person, 0, len(l.records))
	for _, p := range l.records {
		out = append(out, clone(p))
	}
	slices.SortFunc(out, func(a, b ports.Person) int {
		if a.Connection+a.Email < b.Connection+b.Email {
			return -1
		}
		return 1
	})
	return out
}

// Ops returns how many reads and writes were asked of the ledger.
func (l *Ledger) Ops() (reads, writes int64) { return l.reads.Load(), l.writes.Load() }
