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
//
// Contract (ports/conformance.DeadLetters checks it against the in-memory
// store and the JetStream one):
//   - A nil error from DeadLetter means the dead letter is stored, as
//     durably as the store keeps anything: the caller then acknowledges the
//     original, which is gone from the event stream after that. Any error
//     means it may not be stored; the caller must not acknowledge the
//     original, which is delivered again and dead-lettered again.
//   - What is stored reads back whole: the body, the headers exactly as
//     given (names in their case, every value in order), and every other
//     field.
//   - A repeat for one original message (the same Subject and Sequence)
//     succeeds. A store should keep it once (the JetStream one does,
//     within its duplicate window); readers take repeats as one.
//   - ctx bounds the call: a done ctx fails it with an error, and what was
//     cut off in flight may or may not be stored.
//   - Implementations are safe for concurrent use.
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
