package hubspot

import (
	"math/rand/v2"
	"sync"
	"time"
)

// pacer spreads one connection's requests over HubSpot's rate-limit
// interval, from the X-HubSpot-RateLimit-Max, -Remaining and
// -Interval-Milliseconds headers of its responses.
//
// HubSpot announces how long its interval is and what is left in it, but
// not when it ends. So the pacer trusts a count only for one interval
// after it was reported (by then every request it counted has left the
// window), sends freely while more than half the budget is left, spaces
// requests at the steady rate the limit allows (interval/max) below that,
// and when nothing is left waits until the interval since the last report
// has passed. The budget is per app and account, so every replica's
// spending shows in the headers each one sees.
//
// A request whose turn lies further ahead than its caller may wait is not
// queued: it is refused with the time its turn would have come, so the
// caller can park the work.
type pacer struct {
	mu        sync.Mutex
	known     bool
	max       int
	remaining int
	interval  time.Duration
	seen      time.Time // when remaining was reported
	inflight  int       // sent and not yet answered
	queued    int       // admitted and waiting for their turn
	next      time.Time // the earliest turn not yet given out
	parked    time.Time // the turn the last refused request would have had
}

// observe records the rate-limit headers of a response received at now.
func (p *pacer) observe(limit, remaining int, interval time.Duration, now time.Time) {
	if limit <= 0 || remaining < 0 || interval <= 0 {
		return // not enough to pace by
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known && now.Before(p.seen) {
		return // an older report than the one held
	}
	p.known, p.max, p.remaining, p.interval, p.seen = true, limit, remaining, interval, now
}

// admit decides when a request may be sent: the wait and ok, or, when the
// wait would exceed budget, !ok and the wait to report instead.
func (p *pacer) admit(now time.Time, budget time.Duration) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.known {
		p.queued++
		return 0, true
	}
	left := p.remaining
	if !now.Before(p.seen.Add(p.interval)) {
		left = p.max // everything counted then has left the window
	}
	step := p.interval / time.Duration(p.max)
	avail := left - p.inflight - p.queued
	var turn time.Time
	if avail > 0 {
		turn = later(now, p.next)
		if 2*avail > p.max {
			step = 0
		}
	} else {
		turn = later(p.next, p.seen.Add(p.interval).Add(rand.N(rateLimitJitter))) //nolint:gosec // G404: jitter spreads replicas; nothing secret depends on it
	}
	wait := turn.Sub(now)
	if wait > budget {
		// Refused requests come back one step apart, the first at the
		// turn it would have had.
		if p.parked.After(now) {
			p.parked = later(p.parked.Add(max(step, time.Millisecond)), turn)
		} else {
			p.parked = turn
		}
		return p.parked.Sub(now), false
	}
	p.next = turn.Add(step)
	p.queued++
	return max(wait, 0), true
}

// withdraw gives back an admitted request that was not sent after all.
func (p *pacer) withdraw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued--
}

// sent moves an admitted request from waiting to in flight.
func (p *pacer) sent() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued--
	p.inflight++
}

// answered ends a request in flight; call it after observe.
func (p *pacer) answered() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
}

// spacer keeps search requests at most perSecond a second apart. HubSpot
// counts searches per token in their own limit, and search responses carry
// no rate-limit headers, so the pace is the configured one.
type spacer struct {
	mu   sync.Mutex
	gap  time.Duration
	next time.Time
}

func newSpacer(perSecond int) *spacer {
	return &spacer{gap: time.Second / time.Duration(perSecond)}
}

// admit reserves the next turn when it is within budget.
func (s *spacer) admit(now time.Time, budget time.Duration) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	turn := later(now, s.next)
	wait := turn.Sub(now)
	if wait > budget {
		return wait, false
	}
	s.next = turn.Add(s.gap)
	return wait, true
}

// refused pushes the next turn past a search 429: the second's budget was
// spent by someone else.
func (s *spacer) refused(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = later(s.next, now.Add(time.Second))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
