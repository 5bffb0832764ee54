package intercom

import (
	"math/rand/v2"
	"sync"
	"time"
)

// rateWindow is the length of Intercom's rate-limit windows: the limit in
// X-RateLimit-Limit is per 10 seconds, per workspace.
const rateWindow = 10 * time.Second

// pacer spreads one connection's requests evenly over Intercom's rate-limit
// window, from the X-RateLimit-* headers of its responses.
//
// Intercom counts requests per workspace, so the headers tell every
// replica what all of them have spent: each paces to what is left divided
// by the time left, and together they spend the budget across the window
// instead of exhausting it in the first second and collecting 429s (and
// stalling) for the other nine.
//
// A request whose turn lies further ahead than its caller may wait is not
// queued: it is refused with the time its turn would have come, spread
// after the turns of the requests refused before it, so that the caller
// can park the work and free its worker for other connections.
type pacer struct {
	mu        sync.Mutex
	known     bool      // a response carried a remaining count and a reset
	limit     int       // 0 when not reported: the window is then paced only until its reset
	remaining int       // left in the window ending at reset, as last reported (the lowest report wins)
	reset     time.Time // end of the window remaining counts in
	inflight  int       // sent and not yet answered: spent, but maybe not yet in remaining
	queued    int       // admitted and waiting for their turn
	next      time.Time // the earliest turn not yet given out
	parked    time.Time // the turn the last refused request would have had
	// mine counts this client's responses in the window; share is the
	// part of the workspace's spending that is this client's (1 until
	// others are seen), so that replicas pace to their share of what is
	// left rather than each to all of it.
	mine  int
	share float64
}

// observe records the rate-limit headers of a response. Within one window
// the count only falls, so a late response cannot raise it; a response from
// an older window is ignored.
func (p *pacer) observe(limit, remaining int, reset time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if remaining < 0 || reset.IsZero() {
		p.known = false // not enough to pace by
		return
	}
	switch {
	case !p.known || reset.After(p.reset):
		p.remaining, p.reset, p.mine = remaining, reset, 0
	case reset.Equal(p.reset):
		p.remaining = min(p.remaining, remaining)
	default:
		return
	}
	p.known, p.limit = true, limit
	p.mine++
	if spent := limit - p.remaining; limit > 0 && spent >= minShareSample {
		p.share = min(max(float64(p.mine)/float64(spent), minShare), 1)
	}
}

// The share of a workspace's spending a client assumes is its own is
// measured once a window has seen minShareSample requests, and never taken
// below minShare, so that a client is not starved by a guess.
const (
	minShareSample = 10
	minShare       = 0.05
)

// roll moves to the window that contains now, once the known one has
// ended: the budget refills to the limit, or is unknown without one.
func (p *pacer) roll(now time.Time) {
	if now.Before(p.reset) {
		return
	}
	if p.limit <= 0 {
		p.known = false
		return
	}
	n := now.Sub(p.reset)/rateWindow + 1
	p.reset = p.reset.Add(n * rateWindow)
	p.remaining, p.mine = p.limit, 0
}

// admit decides when a request may be sent. It returns the wait before
// sending and ok; or, when that wait would exceed budget, !ok and the wait
// to report to the caller instead (the request then takes no turn). A read
// must leave room within budget for the two writes or reads that follow it
// in the same unit of work (a search, then a create): without that, the
// lookups of new work could take every turn within reach and leave the
// work already started to be refused halfway, its lookups wasted.
func (p *pacer) admit(now time.Time, budget time.Duration, read bool) (wait time.Duration, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known {
		p.roll(now)
	}
	if !p.known {
		p.queued++
		return 0, true
	}
	var turn time.Time
	var interval time.Duration
	if avail := p.remaining - p.inflight - p.queued - p.others(); avail > 0 {
		// This client's share of what is left, over the time left from
		// its turn.
		turn = later(now, p.next)
		share := p.share
		if share == 0 {
			share = 1
		}
		interval = max(time.Duration(float64(p.reset.Sub(turn))/max(float64(avail)*share, 1)), 0)
	} else {
		// This window is spent: turns resume when it ends, at the
		// window's pace, with jitter so that replicas do not line up.
		if p.limit > 0 {
			interval = rateWindow / time.Duration(p.limit)
		}
		turn = later(p.next, p.reset.Add(rand.N(rateLimitJitter))) //nolint:gosec // G404: jitter spreads replicas after a reset; nothing secret depends on it
	}
	allowed := budget
	if read {
		allowed -= 2 * interval
	}
	if wait = turn.Sub(now); wait > allowed {
		p.parked = later(p.parked, turn).Add(interval)
		return p.parked.Sub(now), false
	}
	p.next = turn.Add(interval)
	p.queued++
	return max(wait, 0), true
}

// others is how many requests to leave in the window for the other
// clients of the workspace: one each, estimated from the share. Their
// latest spending is not in the count this client last saw, and without
// the margin both would send the window's last request.
func (p *pacer) others() int {
	if p.share == 0 || p.share >= 1 {
		return 0
	}
	return int(1/p.share - 1 + 0.5) // rounded
}

// spent reports whether, by the latest response, the window has no room
// left for a request admitted earlier whose turn has come: another client
// took it meanwhile. The request should then queue again rather than be
// sent into a certain 429.
func (p *pacer) spent(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.known && now.Before(p.reset) && p.remaining-p.inflight <= 0
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

// answered ends a request in flight; call it after observe, so that the
// response's count and the in-flight count never both miss it.
func (p *pacer) answered() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
