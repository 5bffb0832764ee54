package emulator_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

func TestRateLimit(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	windowEnd := fmt.Sprint(start.Unix() - start.Unix()%10 + 10)
	check := func(res result, wantStatus int, wantRemaining string) {
		t.Helper()
		h := res.header
		if res.status != wantStatus || h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != wantRemaining {
			t.Errorf("status, limit, remaining = %d, %q, %q; want %d, 3, %s",
				res.status, h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"), wantStatus, wantRemaining)
		}
	}
	for i, want := range []string{"2", "1", "0"} {
		res := e.do("POST", "/contacts", map[string]any{"external_id": fmt.Sprint(i)}, token(tokB))
		check(res, 200, want)
		if got := res.header.Get("X-RateLimit-Reset"); got != windowEnd {
			t.Errorf("X-RateLimit-Reset = %s, want %s (end of the aligned 10 s window)", got, windowEnd)
		}
	}
	res := e.do("POST", "/contacts", map[string]any{"external_id": "over"}, token(tokB))
	check(res, 429, "0")
	if res.errCode() != "rate_limit_exceeded" || res.errMessage() != "Exceeded rate limit of 3 in 10_seconds" {
		t.Errorf("error = %q %q, want rate_limit_exceeded, Exceeded rate limit of 3 in 10_seconds", res.errCode(), res.errMessage())
	}
	if n := len(e.srv.Contacts(tokB)); n != 3 {
		t.Errorf("contacts = %d, want 3 (the 429 must not apply)", n)
	}
	// Other tokens have their own windows.
	other := e.must(200, "GET", "/me", nil)
	if got := other.header.Get("X-RateLimit-Limit"); got != strconv.Itoa(1<<31-1) {
		t.Errorf("unlimited token X-RateLimit-Limit = %q, want 2147483647", got)
	}

	e.clock.Add(6 * time.Second) // 9 s into the window
	check(e.do("GET", "/me", nil, token(tokB)), 429, "0")
	e.clock.Add(time.Second) // a new window
	check(e.do("GET", "/me", nil, token(tokB)), 200, "2")
}

// faultEnv starts the default configuration with faults.
func faultEnv(t *testing.T, f emulator.Faults) *env {
	t.Helper()
	cfg := defaultConfig()
	cfg.Faults = f
	return newEnv(t, cfg)
}

func lastRequest(t *testing.T, e *env) emulator.Request {
	t.Helper()
	log := e.srv.Requests()
	if len(log) == 0 {
		t.Fatalf("request log is empty")
	}
	return log[len(log)-1]
}

func TestFaultServerError(t *testing.T) {
	e := faultEnv(t, emulator.Faults{ServerErrorRate: 1})
	seen := map[int]bool{}
	for i := range 12 {
		res := e.do("POST", "/contacts", map[string]any{"external_id": fmt.Sprint(i)})
		switch res.status {
		case 500, 502, 503:
		default:
			t.Fatalf("status = %d, want 500, 502 or 503", res.status)
		}
		seen[res.status] = true
		if res.errCode() == "" || res.str("type") != "error.list" {
			t.Errorf("body = %s, want an error envelope", res.raw)
		}
		if rec := lastRequest(t, e); rec.Fault != emulator.FaultServerError || rec.Committed || rec.Status != res.status {
			t.Errorf("log = %+v, want fault 5xx, not committed, status %d", rec, res.status)
		}
	}
	if len(seen) < 2 {
		t.Errorf("statuses seen = %v, want a mix of 5xx", seen)
	}
	if n := len(e.srv.Contacts(tokA)); n != 0 {
		t.Errorf("contacts = %d, want none: a 5xx applies nothing", n)
	}
	if err := e.srv.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	e.create(map[string]any{"external_id": "0"})
}

func TestFaultLostResponse(t *testing.T) {
	e := faultEnv(t, emulator.Faults{LostResponseRate: 1, Operations: []string{emulator.OpCreateContact}})
	r := e.request("POST", "/contacts", map[string]any{"external_id": "lost"})
	resp, err := http.DefaultClient.Do(r)
	if err == nil {
		_ = resp.Body.Close() // failing anyway
		t.Fatalf("POST with a lost response = %d, want a connection error", resp.StatusCode)
	}
	got := e.srv.Contacts(tokA)
	if len(got) != 1 || got[0].ExternalID != "lost" {
		t.Fatalf("contacts = %+v, want the contact committed", got)
	}
	if rec := lastRequest(t, e); rec.Fault != emulator.FaultLost || !rec.Committed || rec.Status != 200 || rec.ContactID != got[0].ID {
		t.Errorf("log = %+v, want fault lost, committed, status 200, contact %s", rec, got[0].ID)
	}
	// Other operations are not affected; the retry finds the contact.
	if res := e.must(200, "GET", "/contacts/find_by_external_id/lost", nil); res.str("id") != got[0].ID {
		t.Errorf("find after lost response = %q, want %s", res.str("id"), got[0].ID)
	}
}

func TestFaultTimeout(t *testing.T) {
	e := faultEnv(t, emulator.Faults{TimeoutRate: 1, Operations: []string{emulator.OpCreateContact}})
	client := &http.Client{Timeout: 100 * time.Millisecond}
	began := time.Now()
	resp, err := client.Do(e.request("POST", "/contacts", map[string]any{"external_id": "slow"}))
	if err == nil {
		_ = resp.Body.Close() // failing anyway
		t.Fatalf("POST with a timeout fault = %d, want a client timeout", resp.StatusCode)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error = %v, want a timeout", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("client waited %v, want about its 100ms timeout", d)
	}
	if got := e.srv.Contacts(tokA); len(got) != 1 {
		t.Errorf("contacts = %d, want the contact committed before the stall", len(got))
	}
	if rec := lastRequest(t, e); rec.Fault != emulator.FaultTimeout || !rec.Committed {
		t.Errorf("log = %+v, want fault timeout, committed", rec)
	}

	t.Run("Close ends stalls", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r := e.request("POST", "/contacts", map[string]any{"external_id": "slow2"}).WithContext(ctx)
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(r)
			if err == nil {
				_ = resp.Body.Close() // only the error matters: the test wants one
			}
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		e.srv.Close()
		select {
		case err := <-done:
			if err == nil || ctx.Err() != nil {
				t.Errorf("error = %v (ctx %v), want a connection error before the deadline", err, ctx.Err())
			}
		case <-time.After(5 * time.Second):
			t.Errorf("stalled request still waiting 5s after Close")
		}
	})
}

func TestFaultRateLimitBurst(t *testing.T) {
	e := faultEnv(t, emulator.Faults{RateLimitBurstRate: 1, Operations: []string{emulator.OpCreateContact}})
	e.must(200, "GET", "/me", nil) // not a faulted operation
	res := e.do("POST", "/contacts", map[string]any{"external_id": "b"})
	if res.status != 429 || res.errCode() != "rate_limit_exceeded" || res.header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("got %d %q remaining %q, want 429 rate_limit_exceeded remaining 0", res.status, res.errCode(), res.header.Get("X-RateLimit-Remaining"))
	}
	if rec := lastRequest(t, e); rec.Fault != emulator.FaultRateLimit || rec.Committed {
		t.Errorf("log = %+v, want fault 429, not committed", rec)
	}
	if err := e.srv.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	// The burst exhausted the window: every operation waits for it.
	if res := e.do("GET", "/me", nil); res.status != 429 {
		t.Errorf("status in the exhausted window = %d, want 429", res.status)
	}
	e.clock.Add(7 * time.Second)
	e.must(200, "GET", "/me", nil)
	if n := len(e.srv.Contacts(tokA)); n != 0 {
		t.Errorf("contacts = %d, want none", n)
	}
	// Token B's window was not touched.
	e.must(200, "GET", "/me", nil, token(tokB))
}

func TestFaultsAreDeterministic(t *testing.T) {
	run := func(seed int64) []emulator.Fault {
		cfg := defaultConfig()
		cfg.Seed = seed
		cfg.Faults = emulator.Faults{ServerErrorRate: 0.3, RateLimitBurstRate: 0.05, Operations: []string{emulator.OpShowContact}}
		e := newEnv(t, cfg)
		var out []emulator.Fault
		for range 60 {
			e.do("GET", "/contacts/0123456789abcdef01234567", nil)
			e.clock.Add(10 * time.Second) // a fresh window each time
			out = append(out, lastRequest(t, e).Fault)
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	count := map[emulator.Fault]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("request %d: fault %s then %s with the same seed", i, a[i], b[i])
		}
		count[a[i]]++
	}
	if count[emulator.FaultServerError] < 5 || count[emulator.FaultServerError] > 35 || count[emulator.FaultNone] < 20 {
		t.Errorf("faults over 60 requests = %v, want about 30%% 5xx", count)
	}
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Errorf("seeds 7 and 8 gave the same 60 faults")
	}
}

func TestLatency(t *testing.T) {
	cfg := defaultConfig()
	cfg.Latency = 30 * time.Millisecond
	e := newEnv(t, cfg)
	began := time.Now()
	e.must(200, "GET", "/me", nil)
	if d := time.Since(began); d < 30*time.Millisecond {
		t.Errorf("request took %v, want at least the 30ms latency", d)
	}
}
