package memory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/conformance"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

func TestLedgerConformance(t *testing.T) {
	conformance.Ledger(t, func(*testing.T) (ports.Ledger, ports.Ledger) {
		l := memory.NewLedger()
		return l, l
	})
}

// memCRM is the CRM behind an in-memory harness: a clock of its own, and
// the faults the suite injects, which memory.CRM takes through its Fault
// hook. It models a CRM with one custom field and a ten-second rate-limit
// window.
type memCRM struct {
	mu       sync.Mutex
	now      time.Time
	faults   map[string]conformance.Fault // by memory.Call.Op
	spentTil time.Time
	refusing bool // the call comes through refusedCRM
}

// refusedCRM reaches the same CRM with a credential it refuses. The suite
// calls it from one goroutine at a time.
type refusedCRM struct {
	crm *memory.CRM
	m   *memCRM
}

func (r *refusedCRM) refuse(on bool) {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	r.m.refusing = on
}

func (r *refusedCRM) Find(ctx context.Context, id domain.Identity) ([]domain.Match, error) {
	r.refuse(true)
	defer r.refuse(false)
	return r.crm.Find(ctx, id)
}

func (r *refusedCRM) Create(ctx context.Context, c domain.Contact) (ports.Created, error) {
	r.refuse(true)
	defer r.refuse(false)
	return r.crm.Create(ctx, c)
}

func (r *refusedCRM) Update(ctx context.Context, id string, c domain.Contact) error {
	r.refuse(true)
	defer r.refuse(false)
	return r.crm.Update(ctx, id, c)
}

const (
	memKnownField   = "referral_link"
	memUnknownField = "no_such_field"
)

func (m *memCRM) clock() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

func (m *memCRM) fault(c memory.Call) memory.Fault {
	m.mu.Lock()
	defer m.mu.Unlock()
	op := c.Op
	if c.Op == "update-response" {
		op = "update"
	}
	if m.refusing {
		return memory.Fault{Err: &ports.Error{Op: op, Kind: ports.Unauthorized, Status: 401}}
	}
	if m.now.Before(m.spentTil) && c.Op != "update-response" {
		return memory.Fault{Err: &ports.Error{Op: op, Kind: ports.RateLimited, Status: 429, RetryAfter: m.spentTil.Sub(m.now)}}
	}
	if _, bad := c.Contact.Custom[memUnknownField]; bad && c.Op != "update-response" {
		return memory.Fault{Err: &ports.Error{Op: op, Kind: ports.Permanent, Status: 400, Message: "unknown custom field " + memUnknownField}}
	}
	switch f := m.faults[op]; {
	case f == conformance.ServerError && c.Op != "update-response":
		return memory.Fault{Err: &ports.Error{Op: op, Kind: ports.Transient, Status: 503, Uncertain: op != "find"}}
	case f == conformance.LostResponse && c.Op != "update":
		return memory.Fault{LoseResponse: true}
	case f == conformance.Stall && c.Op == "create":
		return memory.Fault{CommitAfter: time.Second}
	}
	return memory.Fault{}
}

func TestCRMConformance(t *testing.T) {
	conformance.CRM(t, func(_ *testing.T) conformance.CRMHarness {
		m := &memCRM{now: time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC), faults: map[string]conformance.Fault{}}
		crm := &memory.CRM{Now: m.clock, SearchLag: time.Minute, Fault: m.fault}
		refused := &refusedCRM{crm: crm, m: m}
		return conformance.CRMHarness{
			CRM:       crm,
			Refused:   refused,
			Caps:      conformance.CRMCaps{UniqueEmail: false, ExternalIDs: true, Paces: false},
			SearchLag: crm.SearchLag,
			Now:       m.clock,
			Advance: func(d time.Duration) {
				m.mu.Lock()
				defer m.mu.Unlock()
				m.now = m.now.Add(d)
			},
			Inject: func(op conformance.Op, f conformance.Fault) {
				m.mu.Lock()
				defer m.mu.Unlock()
				m.faults[string(op)] = f
			},
			Clear: func() {
				m.mu.Lock()
				defer m.mu.Unlock()
				clear(m.faults)
			},
			SpendBudget: func() {
				m.mu.Lock()
				defer m.mu.Unlock()
				m.spentTil = m.now.Truncate(10 * time.Second).Add(10 * time.Second)
			},
			Delete:   crm.Delete,
			Requests: func() int { return len(crm.Calls()) },
			Stored: func(email string) []domain.Match {
				var out []domain.Match
				for _, c := range crm.Contacts() {
					if strings.EqualFold(c.Email, email) {
						out = append(out, c.Match)
					}
				}
				return out
			},
			Custom: func(id string) map[string]string {
				out := map[string]string{}
				for _, c := range crm.Contacts() {
					if c.ID == id {
						for k, v := range c.Custom {
							out[k] = fmt.Sprint(v)
						}
					}
				}
				return out
			},
			KnownField:   memKnownField,
			UnknownField: memUnknownField,
		}
	})
}

func TestDeadLettersConformance(t *testing.T) {
	conformance.DeadLetters(t, func(*testing.T) conformance.DeadLettersHarness {
		d := &memory.DeadLetters{}
		var broken atomic.Bool
		d.Fault = func(ports.DeadLetter) error {
			if broken.Load() {
				return errors.New("store unavailable")
			}
			return nil
		}
		return conformance.DeadLettersHarness{
			DeadLetters: d,
			Stored:      func(*testing.T) []ports.DeadLetter { return d.Letters() },
			Break:       func() { broken.Store(true) },
		}
	})
}
