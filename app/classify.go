package app

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// failure is a classified CRM failure.
type failure struct {
	err  error
	kind ports.ErrorKind
	// certain: a write certainly was not applied (refused, or never sent).
	certain bool
	// wait: not a failed attempt (the CRM's rate limit: its turn comes).
	wait  bool
	delay time.Duration
	// permanent: the event will fail the same way every time.
	permanent bool
}

// classify sorts a CRM error by what to do about it. An unknown error is
// transient: retried, never dropped.
func classify(err error) failure {
	f := failure{err: err, kind: ports.KindOf(err)}
	var e *ports.Error
	if errors.As(err, &e) {
		f.certain = !e.Uncertain
		f.delay = e.RetryAfter
	}
	switch f.kind {
	case ports.Permanent:
		f.permanent = true
	case ports.RateLimited:
		// Rate-limited is a wait, never a failed attempt: the request was
		// not sent, and it will be when the CRM's window turns.
		f.wait, f.certain = true, true
	default:
		// Transient, Unauthorized and NotFound are failed attempts; the
		// error's certainty and delay, read above, are all there is.
	}
	return f
}

// cause is the failure's retry cause (a metric label).
func (f failure) cause() string {
	switch f.kind {
	case ports.RateLimited:
		return CauseRateLimited
	case ports.Unauthorized:
		return CauseUnauthorized
	case ports.NotFound:
		return CauseNotFound
	default:
		return CauseTransient
	}
}

// deadLetterReason is the reason an event is dead-lettered with when it
// runs out of attempts with this as its last failure.
func deadLetterReason(lastCause string) string {
	if lastCause == CauseUnauthorized {
		return ReasonUnauthorized
	}
	return ReasonAttemptsExhausted
}

// retry is a retry verdict for a failed attempt.
func retry(cause string, err error, delay time.Duration) Verdict {
	return Verdict{Retry: true, Reason: cause, Err: err, Delay: delay}
}

// wait is a retry verdict that is not a failed attempt.
func wait(cause string, err error, delay time.Duration) Verdict {
	return Verdict{Retry: true, Wait: true, Reason: cause, Err: err, Delay: delay}
}

func settled(o domain.Outcome, contactID string) Verdict {
	return Verdict{Outcome: o, ContactID: contactID}
}

// randomJitter returns a random duration in [0, d].
func randomJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d) + 1)) //nolint:gosec // G404: jitter spreads retries; nothing secret depends on it
}

// until returns the delay to t from now, plus up to a quarter second of
// jitter so that the workers waiting for one person do not come back in
// step.
func (s *Service) until(t time.Time) time.Duration {
	return max(t.Sub(s.cfg.Now()), 0) + s.cfg.Jitter(250*time.Millisecond)
}
