package intercom

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

var t0 = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

func TestPacerAdmit(t *testing.T) {
	const budget = 15 * time.Second
	t.Run("without headers nothing waits", func(t *testing.T) {
		var p pacer
		for range 100 {
			if wait, ok := p.admit(t0, budget, false); !ok || wait != 0 {
				t.Fatalf("admit() = %v, %v; want no wait before any rate-limit header", wait, ok)
			}
			p.sent()
		}
	})
	t.Run("what is left is spread over the time left", func(t *testing.T) {
		var p pacer
		p.observe(10, 10, t0.Add(10*time.Second))
		var waits []time.Duration
		for range 4 {
			wait, ok := p.admit(t0, budget, false)
			if !ok {
				t.Fatalf("admit() refused within a 15s budget")
			}
			waits = append(waits, wait)
		}
		// Each turn comes the time left after the one before, divided by
		// the requests left: one a second.
		want := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second}
		if fmt.Sprint(waits) != fmt.Sprint(want) {
			t.Errorf("waits %v, want %v", waits, want)
		}
	})
	t.Run("requests in flight and waiting count against the window", func(t *testing.T) {
		var p pacer
		p.observe(10, 2, t0.Add(5*time.Second))
		for range 2 {
			if _, ok := p.admit(t0, budget, false); !ok {
				t.Fatal("refused")
			}
		}
		p.sent() // one in flight, one waiting: the window's two are taken
		wait, ok := p.admit(t0, budget, false)
		if !ok || wait < 5*time.Second || wait > 5*time.Second+rateLimitJitter {
			t.Errorf("admit() = %v, %v; want a turn once the window resets in 5s", wait, ok)
		}
	})
	t.Run("a spent window waits for its reset, then refills", func(t *testing.T) {
		var p pacer
		p.observe(167, 0, t0.Add(6*time.Second))
		wait, ok := p.admit(t0, budget, false)
		if !ok || wait < 6*time.Second || wait > 6*time.Second+rateLimitJitter {
			t.Fatalf("admit() = %v, %v; want about 6s", wait, ok)
		}
		p.sent()
		p.answered()
		// After the reset, 167 more fit in the new window: the next turn
		// is one 167th of it after the first.
		now := t0.Add(wait)
		if wait, ok := p.admit(now, budget, false); !ok || wait <= 0 || wait > rateWindow/166 {
			t.Errorf("admit() after the reset = %v, %v; want at most %v", wait, ok, rateWindow/166)
		}
	})
	t.Run("a late response cannot raise the count, an old window is ignored", func(t *testing.T) {
		var p pacer
		reset := t0.Add(10 * time.Second)
		p.observe(10, 1, reset)
		p.observe(10, 8, reset)
		p.observe(10, 9, reset.Add(-rateWindow))
		if _, ok := p.admit(t0, budget, false); !ok {
			t.Fatal("refused")
		}
		if wait, _ := p.admit(t0, budget, false); wait < 10*time.Second {
			t.Errorf("second request waits %v, want until the reset: one request was left", wait)
		}
	})
	t.Run("replicas pace to their share of what is left", func(t *testing.T) {
		var p pacer
		reset := t0.Add(10 * time.Second)
		// Twenty of this client's requests while the workspace's count
		// fell by forty: another replica spends as much.
		for i := 1; i <= 20; i++ {
			p.observe(100, 100-2*i, reset)
		}
		now := t0.Add(5 * time.Second)
		if _, ok := p.admit(now, budget, false); !ok {
			t.Fatal("refused")
		}
		// Sixty left over five seconds, one of them kept for the other
		// replica: half of 59 are this client's, one every 5s/29.5, not
		// one every 5s/59.
		wait, _ := p.admit(now, budget, false)
		if want := 5 * time.Second * 2 / 59; wait < want*99/100 || wait > want*101/100 {
			t.Errorf("second turn after %v, want %v", wait, want)
		}
	})
	t.Run("a turn whose room another client took is not used", func(t *testing.T) {
		var p pacer
		reset := t0.Add(10 * time.Second)
		p.observe(10, 3, reset)
		if _, ok := p.admit(t0, budget, false); !ok {
			t.Fatal("refused")
		}
		wait, ok := p.admit(t0, budget, false)
		if !ok || wait <= 0 {
			t.Fatalf("admit() = %v, %v; want a turn ahead", wait, ok)
		}
		if p.spent(t0.Add(wait)) {
			t.Fatal("spent() with room left")
		}
		p.observe(10, 0, reset) // another replica spent the rest
		if !p.spent(t0.Add(wait)) {
			t.Error("spent() = false after the window was reported spent; the turn would meet a 429")
		}
		if p.spent(reset) {
			t.Error("spent() = true once the window reset")
		}
	})
	t.Run("beyond the budget: refused at once, later refusals later", func(t *testing.T) {
		var p pacer
		p.observe(10, 10, t0.Add(10*time.Second))
		var admitted int
		var after []time.Duration
		for range 6 {
			wait, ok := p.admit(t0, 1500*time.Millisecond, false)
			if ok {
				admitted++
				continue
			}
			after = append(after, wait)
		}
		if admitted != 2 {
			t.Errorf("%d admitted, want the 2 whose turn is within 1.5s (0 and 1s)", admitted)
		}
		for i, d := range after {
			if d <= 1500*time.Millisecond || i > 0 && d <= after[i-1] {
				t.Errorf("refusals came back after %v, want each beyond the budget and after the one before", after)
				break
			}
		}
	})
	t.Run("a read leaves room for the requests that follow it", func(t *testing.T) {
		var p pacer
		p.observe(10, 10, t0.Add(10*time.Second))
		if _, ok := p.admit(t0, 2*time.Second, false); !ok {
			t.Fatal("refused")
		}
		// The next turn is 1s away: a write may wait for it within 2s; a
		// read, which a write will follow, may not.
		if _, ok := p.admit(t0, 2*time.Second, true); ok {
			t.Error("read admitted 1s ahead with a 2s budget; want it refused to keep room for writes")
		}
		if _, ok := p.admit(t0, 2*time.Second, false); !ok {
			t.Error("write refused 1s ahead with a 2s budget")
		}
	})
}

// pacedEnv is an emulator with one token limited to 167 requests per 10 s,
// Intercom's documented default, sharing a fake clock with its clients.
func pacedEnv(t *testing.T) *emuEnv {
	t.Helper()
	return newEmuEnv(t, func(c *emulator.Config) {
		c.Tokens["emu-tok-paced_167"] = emulator.Workspace{ID: "ws_paced", RateLimit: 167}
	})
}

// windows counts the accepted requests and 429s per 10-second window of the
// emulator's clock.
func windows(e *emuEnv) (accepted, refused map[int64]int, firstHalf map[int64]int) {
	accepted, refused, firstHalf = map[int64]int{}, map[int64]int{}, map[int64]int{}
	for _, r := range e.emu.Requests() {
		w := r.Time.Unix() / 10
		if r.Status == http.StatusTooManyRequests {
			refused[w]++
			continue
		}
		accepted[w]++
		if r.Time.Unix()%10 < 5 {
			firstHalf[w]++
		}
	}
	return accepted, refused, firstHalf
}

// TestPacingAgainstTheEmulator runs requests back to back against a token
// limited to 167 per window: they must use at least 95% of the allowed
// rate, be spread over each window rather than spent at its start, and
// almost never meet a 429; also when two replicas share the token.
func TestPacingAgainstTheEmulator(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d replicas", replicas), func(t *testing.T) {
			e := pacedEnv(t)
			var clients []*Client
			for range replicas {
				clients = append(clients, e.client(t, "emu-tok-paced_167", nil))
			}
			const n = 4 * 167
			for i := range n {
				_, err := clients[i%replicas].Find(t.Context(), domain.Identity{Email: fmt.Sprintf("p%d@example.com", i)})
				if err != nil {
					t.Fatalf("Find #%d: %v", i, err)
				}
			}
			accepted, refused, firstHalf := windows(e)
			total429 := 0
			for _, r := range refused {
				total429 += r
			}
			if share := float64(total429) / float64(n+total429); share > 0.01 {
				t.Errorf("%d of %d requests answered 429 (%.1f%%), want at most 1%%", total429, n+total429, 100*share)
			}
			// The first three windows are whole: the clock starts at a
			// window's start and the run needs four.
			start := t0.Unix() / 10
			for w := start; w < start+3; w++ {
				if accepted[w] < 159 {
					t.Errorf("window %d: %d requests accepted, want at least 159 (95%% of 167)", w-start, accepted[w])
				}
				if firstHalf[w] > accepted[w]*6/10 {
					t.Errorf("window %d: %d of %d requests in its first half, want them spread over the window", w-start, firstHalf[w], accepted[w])
				}
			}
		})
	}
}

// TestThrottledConnectionDoesNotHoldTheCaller: with a short wait budget, a
// call whose turn is far off comes back at once as RateLimited, with when
// to try again, instead of holding its caller (a worker other connections
// need) until the window resets.
func TestThrottledConnectionDoesNotHoldTheCaller(t *testing.T) {
	e := newEmuEnv(t, nil)
	c := e.client(t, emuLimited, func(c *Config) { c.MaxRateLimitWait = time.Second })
	lead := domain.Contact{Role: domain.RoleLead, Email: "rl@example.com"}
	for range 2 { // the token's whole window
		if _, err := c.Create(t.Context(), lead); err != nil {
			t.Fatal(err)
		}
	}
	sleptBefore := e.clock.Total()
	_, err := c.Create(t.Context(), lead)
	pe := asPortsError(t, err)
	if pe.Kind != ports.RateLimited || pe.Uncertain || pe.RetryAfter < time.Second {
		t.Errorf("Create() = %+v, want RateLimited with RetryAfter beyond the 1s budget", pe)
	}
	if slept := e.clock.Total() - sleptBefore; slept != 0 {
		t.Errorf("the refused call waited %v, want no wait", slept)
	}
	if n := e.count(emulator.OpCreateContact); n != 2 {
		t.Errorf("%d creates sent, want 2: a refused call sends nothing", n)
	}
}
