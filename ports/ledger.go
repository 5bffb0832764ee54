package ports

import (
	"context"
	"errors"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// ErrConflict means the record changed after it was read: another worker
// (in this process or another replica) wrote it first. Nothing was written;
// the caller must read again and decide again from what it finds.
var ErrConflict = errors.New("ledger record changed since it was read")

// Ledger is the durable record that makes the service exactly-once: one
// record per person (per connection and normalised email) holding the
// person's CRM contact, at most one create whose outcome is not yet known,
// and the terminal outcomes of the person's recent events.
//
// Contract, which every implementation must keep (the app relies on each
// point; adapters/ledger and the in-memory ledger are tested against it):
//   - Person reads the current record. A person never written is returned
//     with Revision 0 and no error. A read never blocks on other workers.
//   - Put is a compare-and-set: it writes p only if the stored record is
//     still at p.Revision (0: only if no record is stored), then sets
//     p.Revision to the new revision. Otherwise it returns ErrConflict and
//     stores nothing. So a worker whose read is stale — because another
//     worker wrote in between, or because it was paused past the end of
//     its create's lease and someone else resolved the create — can write
//     nothing at all.
//   - A successful Put is durable to the degree the store is (see the
//     README's Guarantees); an error other than ErrConflict means the write
//     may or may not have been stored, and the caller must read again.
//   - ctx bounds the call; a cancelled ctx returns ctx's error, and a Put
//     cancelled in flight may or may not have been stored.
//   - Records are kept at least as long as the store's retention (ledger
//     ttl) after their last write; what is older may be gone.
type Ledger interface {
	Person(ctx context.Context, connection, email string) (Person, error)
	Put(ctx context.Context, p *Person) error
}

// Person is one person's record.
type Person struct {
	Connection string
	Email      string // normalised; implementations keep it out of keys
	// Revision is the stored revision this value was read at (0: none).
	Revision uint64
	// ContactID is the person's CRM contact, once known: a later event for
	// a known person needs no search and is immune to the CRM's search lag.
	ContactID string
	// Pending is a create that may have been sent and whose outcome is not
	// known yet. While it is set, nothing else creates this person.
	Pending *PendingCreate
	// Events holds the person's recent events: their terminal outcomes,
	// and the failed attempts of those not yet settled. Oldest first,
	// bounded by the application.
	Events []EventRecord
}

// PendingCreate is a create request that may or may not have been applied.
type PendingCreate struct {
	EventID string
	// Owner names the process that sent it, for diagnosis only.
	Owner string
	// NotAfter is the last moment the create could still be sent: the
	// deadline the CRM adapter was given, after which it never sends.
	// Until then the holder is working and everyone else waits; after it,
	// the create either was applied or never will be, and whoever comes
	// next resolves it.
	NotAfter time.Time
	// ExternalID is the external id the create carried, if any: the CRM
	// can then tell at once whether it was applied (a lookup by external
	// id is consistent, unlike search), so nobody need wait for search lag.
	ExternalID string
}

// EventRecord is what the ledger knows of one event.
type EventRecord struct {
	ID string
	// Outcome is the event's terminal outcome (created, updated, skipped,
	// nothing, dead_lettered), or empty while it has only failed attempts.
	Outcome   domain.Outcome
	ContactID string
	At        time.Time // when the outcome, or the last failure, was recorded
	// Failures counts failed attempts across deliveries and replicas.
	Failures     int
	FirstFailure time.Time
	// Reason is the dead-letter reason of a dead-lettered event, or the
	// cause of the last failed attempt of one not settled yet.
	Reason string
	// ReplayedFrom is the dead letter whose replay last re-armed the event,
	// so that a redelivery of that same replay does not re-arm it again.
	ReplayedFrom string
	// CountedBy names the delivery that counted the outcome (its metric
	// and its log line); empty while no message of the event has. A create
	// found applied while handling another event is recorded for its own
	// event uncounted, and that event's next delivery counts it, once. A
	// delivery whose write's answer was lost reads the record back and
	// knows from it whether its write landed.
	CountedBy string
	// FailedBy names the deliveries whose failed attempts are counted
	// (the most recent, as many as attempts are allowed), so that one
	// delivery counts its failure once however often it has to write it,
	// even while other deliveries of the event write theirs.
	FailedBy []string
}

// Terminal reports whether the event has ended.
func (r EventRecord) Terminal() bool { return r.Outcome != "" }
