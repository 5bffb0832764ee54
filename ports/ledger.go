package ports

import (
	"context"
	"errors"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// ErrClaimHeld means another worker (in this process or another replica)
// holds a live lock on the person; try again shortly.
var ErrClaimHeld = errors.New("held by another worker")

// ErrClaimLost means the lock was taken over (its lease expired) before the
// holder finished; the holder must stop writing.
var ErrClaimLost = errors.New("lock lost")

// Ledger is the durable record of what happened to each event, keyed by
// (connection, event id). It is what makes redeliveries, duplicate
// publishes and replays harmless. Writes for an event happen only while the
// event's person is locked (People.Lock), so they need no compare-and-set
// of their own.
type Ledger interface {
	// Event returns what is recorded for the event; the zero value when
	// nothing is.
	Event(ctx context.Context, key string) (EventRecord, error)
	// Done records that the event was applied.
	Done(ctx context.Context, key string, r Record) error
	// Failed records a failed attempt and returns the updated record, so
	// attempts are counted per event across deliveries and replicas.
	Failed(ctx context.Context, key string, at time.Time) (EventRecord, error)
	// Clear forgets the event's failed attempts (after it was
	// dead-lettered, so that a replay starts afresh). It never forgets an
	// applied event.
	Clear(ctx context.Context, key string) error
}

// EventRecord is the ledger's state for one event.
type EventRecord struct {
	Done         *Record // set once the event was applied
	Failures     int     // failed attempts so far
	FirstFailure time.Time
}

// Record is what the ledger remembers of an applied event.
type Record struct {
	Outcome   domain.Outcome
	ContactID string
	At        time.Time
}

// People serialises work on one person (per connection and normalised
// email) across every worker and replica, and remembers the person's CRM
// contact, so that a later event for a known person needs no search and is
// immune to the CRM's search lag.
type People interface {
	// Lock takes the person's lock, with a lease after which a crashed
	// holder's lock can be taken over. It returns ErrClaimHeld when a live
	// lock is held elsewhere.
	Lock(ctx context.Context, connection, email string) (Person, error)
	// Save writes the person's state and keeps the lock; it returns
	// ErrClaimLost if the lock was taken over.
	Save(ctx context.Context, p *Person) error
	// Unlock writes the person's state and releases the lock.
	Unlock(ctx context.Context, p Person) error
}

// Person is a locked person record.
type Person struct {
	Key       string
	Revision  uint64
	ContactID string // the CRM contact, once known
	// CreatedBy is the event whose create made ContactID, so that event's
	// redelivery is answered "created" even if recording it failed.
	CreatedBy string
	// Pending is a create that was sent and whose outcome is not known
	// (timeout, reset, crash): it must be resolved before anything else
	// creates this person.
	Pending *PendingCreate
}

// PendingCreate is a create request that may or may not have been applied.
type PendingCreate struct {
	EventID string
	At      time.Time
	// ExternalID is the external id the create carried, if any: the CRM
	// can then tell at once whether it was applied (a lookup by external
	// id is consistent, unlike search), so nobody need wait for the
	// search lag.
	ExternalID string
}
