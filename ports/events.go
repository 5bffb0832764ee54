package ports

import (
	"context"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// DeadLetter is a message that can never be processed, with why.
type DeadLetter struct {
	Body []byte
	// Headers are the original message's headers exactly as received:
	// names in their original case, every value of a repeated header in
	// order (the shape of nats.Header and http.Header), so a dead letter
	// keeps what came in and a replay sends it back unchanged.
	Headers   map[string][]string
	Reason    string // stable reason class, e.g. "invalid_email"
	Message   string // human-readable detail, free of personal data
	Attempts  int
	Subject   string
	Sequence  uint64
	EventID   string
	Campaign  string
	FirstSeen time.Time
	Failed    time.Time
}

// DeadLetters stores messages that can never be processed, so nothing is
// lost and an operator can inspect and replay them.
type DeadLetters interface {
	DeadLetter(ctx context.Context, d DeadLetter) error
}

// Metrics records what the application did. Implementations must be cheap
// and safe for concurrent use; labels must stay low-cardinality.
type Metrics interface {
	// Outcome counts the one final outcome of a message.
	Outcome(campaign string, action domain.Action, outcome domain.Outcome, reason string)
	// Retry counts a message sent back for a later attempt.
	Retry(campaign string, kind string)
	// Processed observes the time from a delivery's receipt to its final
	// outcome: the service's own processing time, never negative.
	Processed(d time.Duration)
	// EventAge observes how old an event was when it was received, from
	// its own time (or the stream's, when it has none). An age below zero
	// (a producer clock ahead of ours) is observed as zero and counted, so
	// the histogram cannot go negative.
	EventAge(d time.Duration)
}
