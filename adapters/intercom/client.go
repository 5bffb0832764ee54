package intercom

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/referrer-sync/referrer-sync/ports"
)

// Operation names passed to Config.Observe and used as ports.Error.Op. They
// are stable because dashboards and alerts key on them.
const (
	OpFindByExternalID = "find_by_external_id"
	OpSearch           = "search"
	OpCreate           = "create"
	OpUpdate           = "update"
	OpGet              = "get"
	OpMe               = "me"
	OpListAttributes   = "list_attributes"
	OpCreateAttribute  = "create_attribute"
)

const (
	userAgent = "referrer-sync"
	// maxResponseBytes caps how much of a response body is read. A search
	// page of 150 contacts with custom attributes stays well below it; an
	// answer above it is treated as a failed read rather than buffered.
	maxResponseBytes = 4 << 20
	// maxResetWait caps a wait computed from X-RateLimit-Reset. Intercom's
	// windows are 10 seconds; a reset further away means clock skew, and
	// trusting it would stall the connection.
	maxResetWait = time.Minute
	// defaultRateLimitWait is used for a 429 without X-RateLimit-Reset.
	defaultRateLimitWait = time.Second
	rateLimitJitter      = 250 * time.Millisecond
	maxRateLimitRetries  = 10
	backoffBase          = 200 * time.Millisecond
	// maxIdleConnsPerHost keeps a connection per worker open between
	// requests; above the service's worker counts in practice (8 by
	// default, a few dozen when the CRM is slow).
	maxIdleConnsPerHost = 256
	backoffCap          = 5 * time.Second
)

// Client is the Intercom implementation of ports.CRM for one workspace. It
// is safe for concurrent use; create one per connection and share it.
type Client struct {
	cfg     Config
	base    string
	minor   int
	http    *http.Client
	observe func(op string, status int, d time.Duration)
	rlHook  func(limit, remaining int, reset time.Time)

	// now and sleep are the clock used for rate-limit windows and waits;
	// tests replace them to share a fake clock with the emulator.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu    sync.Mutex
	rl    rateState
	pacer pacer
}

var _ ports.CRM = (*Client)(nil)

type rateState struct {
	known     bool
	limit     int
	remaining int
	reset     time.Time // when the window refills, at most maxResetWait after it was seen
}

// New validates cfg, applies defaults and returns a client. It makes no
// request; call Me to verify the token at start-up.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	minor, _ := parseVersion(cfg.APIVersion) // validated above
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// Every worker may have a request to the one host in flight. With
		// the default of two idle connections per host, the others are
		// closed after each response and the next request pays a new
		// TCP and TLS handshake, a round trip or two more to Intercom.
		tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
		hc = &http.Client{
			Transport: tr,
			// Intercom's API does not redirect. Following one would turn a
			// POST into a GET or send the request somewhere unexpected.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Client{
		cfg:     cfg,
		base:    cfg.baseURL(),
		minor:   minor,
		http:    hc,
		observe: cfg.Observe,
		rlHook:  cfg.RateLimit,
		now:     time.Now,
		sleep:   sleepCtx,
	}, nil
}

// String identifies the client without its token; it also keeps %v of a
// *Client from printing the unexported configuration.
func (c *Client) String() string {
	return fmt.Sprintf("intercom.Client{Connection:%q BaseURL:%q APIVersion:%q}", c.cfg.Connection, redactURL(c.base), c.cfg.APIVersion)
}

// GoString makes %#v as safe as %v.
func (c *Client) GoString() string { return c.String() }

// LogValue makes slog render the client without its token.
func (c *Client) LogValue() slog.Value { return c.cfg.LogValue() }

// RateLimitStatus returns the latest X-RateLimit-* values seen (the reset
// capped at a minute ahead, against clock skew), and false before any
// response carried them.
func (c *Client) RateLimitStatus() (limit, remaining int, reset time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rl.limit, c.rl.remaining, c.rl.reset, c.rl.known
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryPolicy says when a request may be sent again.
type retryPolicy int

const (
	// repeatable requests have the same effect however often they are
	// sent: reads, PUT, and a data-attribute create (a repeat answers
	// "already exists").
	repeatable retryPolicy = iota + 1
	// unsentOnly requests (contact create) may be sent again only when
	// they certainly were not applied: a 429, or a connection that failed
	// before anything was written. Anything else is returned as uncertain
	// so the application can reconcile by lookup instead of creating a
	// duplicate lead.
	unsentOnly
)

type call struct {
	op     string
	method string
	path   string // escaped path and query, starting with "/"
	body   []byte // nil: no body
	policy retryPolicy
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// send performs k with retries. It returns the response for every status
// except those it handles itself: 429 (waited for, else RateLimited) and
// 5xx/408 (retried when repeatable, else Transient). Callers classify the
// remaining statuses with statusError.
func (c *Client) send(ctx context.Context, k call) (response, error) {
	var (
		rlWaited  time.Duration
		rlRetries int
		failures  int
	)
	// waitRateLimit waits d for the window to refill, or returns the
	// RateLimited error when that would exceed the call's budget.
	waitRateLimit := func(d time.Duration, res *response) error {
		if rlWaited+d > c.cfg.MaxRateLimitWait || rlRetries >= maxRateLimitRetries || pastDeadline(ctx, d) {
			return c.rateLimited(k.op, d, res)
		}
		rlWaited += d
		rlRetries++
		if err := c.sleep(ctx, d); err != nil {
			pe := c.rateLimited(k.op, d, res)
			pe.Err = err
			return pe
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return response{}, &ports.Error{Op: k.op, Kind: ports.Transient, Err: err}
		}
		// Take a turn in the connection's pacing: spread over the window,
		// never a request the window has no room for. A turn beyond what
		// the call may still wait is refused at once, with when to come
		// back, so that the caller's worker is not held.
		read := k.method == http.MethodGet || k.op == OpSearch
		wait, ok := c.pacer.admit(c.now(), c.cfg.MaxRateLimitWait-rlWaited, read)
		if !ok {
			return response{}, c.rateLimited(k.op, wait, nil)
		}
		if wait > 0 {
			if pastDeadline(ctx, wait) {
				c.pacer.withdraw()
				return response{}, c.rateLimited(k.op, wait, nil)
			}
			rlWaited += wait
			if err := c.sleep(ctx, wait); err != nil {
				c.pacer.withdraw()
				pe := c.rateLimited(k.op, wait, nil)
				pe.Err = err
				return response{}, pe
			}
		}
		// While this call waited, another replica may have spent what
		// was left of the window: queue again rather than meet a 429.
		if wait > 0 && c.pacer.spent(c.now()) {
			c.pacer.withdraw()
			continue
		}
		c.pacer.sent()
		res, sent, err := c.attempt(ctx, k)
		c.pacer.answered()
		if err != nil {
			pe := &ports.Error{Op: k.op, Kind: ports.Transient, Err: c.scrubErr(err)}
			if sent && k.policy == unsentOnly {
				pe.Uncertain = true
				return response{}, pe
			}
			failures++
			if ctx.Err() != nil || failures >= c.cfg.MaxAttempts {
				return response{}, pe
			}
			if err := c.backoff(ctx, failures); err != nil {
				return response{}, pe
			}
			continue
		}
		switch {
		case res.status == http.StatusTooManyRequests:
			if err := waitRateLimit(c.resetWait(res.header), &res); err != nil {
				return response{}, err
			}
			continue
		case res.status >= 500 || res.status == http.StatusRequestTimeout:
			pe := c.statusError(k.op, res)
			if k.policy == unsentOnly {
				// The server may have applied the create before failing.
				pe.Uncertain = true
				return response{}, pe
			}
			failures++
			if failures >= c.cfg.MaxAttempts {
				return response{}, pe
			}
			if err := c.backoff(ctx, failures); err != nil {
				return response{}, pe
			}
			continue
		}
		return res, nil
	}
}

// pastDeadline reports whether waiting d would outlive ctx. Deadlines are
// wall-clock times, so this uses the real clock, not c.now.
func pastDeadline(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < d
}

func (c *Client) rateLimited(op string, d time.Duration, res *response) *ports.Error {
	if res == nil {
		return &ports.Error{Op: op, Kind: ports.RateLimited, RetryAfter: d,
			Message: "rate-limit window spent; request not sent"}
	}
	pe := c.statusError(op, *res)
	pe.RetryAfter = d
	return pe
}

// backoff sleeps before retry number n (1-based): full jitter over an
// exponential ceiling, so replicas that failed together do not retry in
// lockstep.
func (c *Client) backoff(ctx context.Context, n int) error {
	ceiling := backoffBase << min(n-1, 10)
	ceiling = min(ceiling, backoffCap)
	d := ceiling/2 + rand.N(ceiling/2+1) //nolint:gosec // G404: backoff jitter spreads retries; nothing secret depends on it
	if pastDeadline(ctx, d) {
		return context.DeadlineExceeded
	}
	return c.sleep(ctx, d)
}

// attempt sends k once. sent reports whether the request may have reached
// the server; it is false only when the connection could not be made.
func (c *Client) attempt(ctx context.Context, k call) (res response, sent bool, err error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var gotConn atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) },
	})
	var body io.Reader
	if k.body != nil {
		body = bytes.NewReader(k.body)
	}
	req, err := http.NewRequestWithContext(actx, k.method, c.base+k.path, body)
	if err != nil {
		return response{}, false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Intercom-Version", c.cfg.APIVersion)
	req.Header.Set("User-Agent", userAgent)
	if k.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.observeAttempt(k.op, 0, time.Since(start))
		return response{}, gotConn.Load() || !isDialError(err), err
	}
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	_ = resp.Body.Close() // what was read decides; a close error changes nothing
	c.observeAttempt(k.op, resp.StatusCode, time.Since(start))
	c.recordRateLimit(resp.Header)
	if rerr != nil {
		return response{}, true, fmt.Errorf("read response (HTTP %d): %w", resp.StatusCode, rerr)
	}
	if len(data) > maxResponseBytes {
		return response{}, true, fmt.Errorf("response (HTTP %d) exceeds %d bytes", resp.StatusCode, maxResponseBytes)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}, true, nil
}

func (c *Client) observeAttempt(op string, status int, d time.Duration) {
	if c.observe != nil {
		c.observe(op, status, d)
	}
}

// isDialError reports whether err happened while connecting, before any
// byte of the request could be written.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// recordRateLimit stores the X-RateLimit-* headers and reports them.
func (c *Client) recordRateLimit(h http.Header) {
	ls, rs, ts := h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"), h.Get("X-RateLimit-Reset")
	if ls == "" && rs == "" && ts == "" {
		return
	}
	limit, _ := strconv.Atoi(strings.TrimSpace(ls))
	remaining, rerr := strconv.Atoi(strings.TrimSpace(rs))
	var reset time.Time
	if sec, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64); err == nil {
		reset = time.Unix(sec, 0)
	}
	// The stored window ends no later than maxResetWait from now, so a
	// skewed server clock cannot hold requests back for longer.
	windowEnd := reset
	if limitEnd := c.now().Add(maxResetWait); windowEnd.After(limitEnd) {
		windowEnd = limitEnd
	}
	if rerr != nil {
		remaining = -1 // unknown: never wait on it
	}
	c.mu.Lock()
	c.rl = rateState{known: true, limit: limit, remaining: remaining, reset: windowEnd}
	c.mu.Unlock()
	c.pacer.observe(limit, remaining, windowEnd)
	if c.rlHook != nil {
		c.rlHook(limit, max(remaining, 0), reset)
	}
}

// resetWait is how long to wait after a 429: until X-RateLimit-Reset plus
// jitter (Intercom documents no Retry-After), capped against clock skew.
func (c *Client) resetWait(h http.Header) time.Duration {
	jitter := rand.N(rateLimitJitter) //nolint:gosec // G404: jitter spreads retries after a reset; nothing secret depends on it
	if sec, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64); err == nil {
		d := time.Unix(sec, 0).Sub(c.now())
		return min(max(d, 0), maxResetWait) + jitter
	}
	if sec, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && sec >= 0 {
		return min(time.Duration(sec)*time.Second, maxResetWait) + jitter
	}
	return defaultRateLimitWait + jitter
}

// statusError classifies a non-success response.
func (c *Client) statusError(op string, res response) *ports.Error {
	env := parseErrorBody(res.header, res.body, c.scrub)
	pe := &ports.Error{Op: op, Status: res.status, Code: env.code, Message: env.message}
	if env.detail != "" {
		pe.Err = errors.New(env.detail)
	}
	switch s := res.status; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		pe.Kind = ports.Unauthorized
	case s == http.StatusTooManyRequests:
		pe.Kind = ports.RateLimited
	case s == http.StatusRequestTimeout || s >= 500:
		pe.Kind = ports.Transient
	case s == http.StatusNotFound || s == http.StatusGone:
		pe.Kind = ports.NotFound
	case s >= 400:
		pe.Kind = ports.Permanent
	default:
		// 1xx, 3xx or an unexpected 2xx: not understood, so retried later
		// rather than dropped.
		pe.Kind = ports.Transient
		if pe.Err == nil {
			pe.Err = fmt.Errorf("unexpected HTTP status %d", s)
		}
	}
	return pe
}

// fail wraps a classified error with the connection name, which is what an
// operator needs to find the workspace.
func (c *Client) fail(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("intercom %q: %w", c.cfg.Connection, err)
}

// scrub removes the token from text that came from elsewhere (a server's
// message, a transport error), in case anything echoed it.
func (c *Client) scrub(s string) string {
	if c.cfg.Token == "" || s == "" {
		return s
	}
	return strings.ReplaceAll(s, c.cfg.Token, redacted)
}

func (c *Client) scrubErr(err error) error {
	if err == nil || !strings.Contains(err.Error(), c.cfg.Token) {
		return err
	}
	return &scrubbedError{msg: c.scrub(err.Error()), err: err}
}

// scrubbedError keeps errors.Is/As working on an error whose text had the
// token removed.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
