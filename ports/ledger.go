package ports

import (
	"context"
	"errors"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// ErrClaimHeld means another worker (in this process or another replica)
// holds a live claim on the event or person; try again later.
var ErrClaimHeld = errors.New("claim held by another worker")

// ErrClaimLost means the claim was taken over (its lease expired) before the
// holder finished; the holder must not record a result.
var ErrClaimLost = errors.New("claim lost")

// Ledger is the durable record of which events have been applied. It is what
// makes redeliveries, duplicate publishes and replays harmless.
type Ledger interface {
	// Claim takes the event for processing. If the event was already
	// applied it returns a Claim with Done set and the recorded result. If
	// a live claim is held elsewhere it returns ErrClaimHeld.
	Claim(ctx context.Context, key string) (Claim, error)
	// Complete records the result of a claimed event.
	Complete(ctx context.Context, c Claim, r Record) error
	// Release gives up a claim without a result, so a retry can take it at
	// once instead of waiting for the lease to expire.
	Release(ctx context.Context, c Claim) error
}

// Claim is a held claim on an event.
type Claim struct {
	Key      string
	Revision uint64
	Done     *Record // set when the event was already applied
}

// Record is what the ledger remembers of an applied event.
type Record struct {
	Outcome   domain.Outcome
	ContactID string
	At        time.Time
}

// People remembers the CRM contact id of each person, per connection, so a
// later event for a known person needs no search and is immune to the CRM's
// search lag.
type People interface {
	Contact(ctx context.Context, connection string, person domain.Identity) (id string, ok bool, err error)
	Remember(ctx context.Context, connection string, person domain.Identity, contactID string) error
}
