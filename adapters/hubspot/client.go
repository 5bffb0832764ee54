package hubspot

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
	OpGetByEmail      = "get_by_email"
	OpGetByExternalID = "get_by_external_id"
	OpGetByID         = "get_by_id"
	OpSearch          = "search"
	OpCreate          = "create"
	OpUpdate          = "update"
	OpListProperties  = "list_properties"
	OpCreateProperty  = "create_property"
	// OpCheckProperties names CheckProperties' verdict; it is no request
	// of its own.
	OpCheckProperties = "check_properties"
)

const (
	userAgent        = "referrer-sync"
	maxResponseBytes = 4 << 20
	// maxHeaderWait caps a wait read from a header, against a wrong
	// value stalling the connection.
	maxHeaderWait       = time.Minute
	defaultInterval     = 10 * time.Second
	rateLimitJitter     = 250 * time.Millisecond
	maxRateLimitRetries = 10
	// lockedWait is how long to wait after 423 Locked: HubSpot holds such
	// locks for two seconds and asks callers to wait at least that long.
	lockedWait = 2 * time.Second
	// statusLocked and statusMigrating are HubSpot's 423 and its own 477
	// "Migration in Progress" (the account is moving between data-hosting
	// locations; Retry-After says when to come back).
	statusLocked        = http.StatusLocked
	statusMigrating     = 477
	defaultMigrateWait  = time.Minute
	backoffBase         = 200 * time.Millisecond
	backoffCap          = 5 * time.Second
	maxIdleConnsPerHost = 256
)

// Client is the HubSpot implementation of ports.CRM for one account. It is
// safe for concurrent use; create one per connection and share it.
type Client struct {
	cfg     Config
	http    *http.Client
	observe func(op string, status int, d time.Duration)
	rlHook  func(limit, remaining int, reset time.Time)

	// now and sleep are the clock used for pacing and waits; tests
	// replace them to share a fake clock with the emulator.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	pacer  pacer
	search *spacer

	mu sync.Mutex
	rl rateState
	// types are the contact properties' types, from the latest list, so
	// that times are written in the form their property needs.
	types map[string]string
}

var _ ports.CRM = (*Client)(nil)

type rateState struct {
	known                 bool
	limit, remaining      int
	interval              time.Duration
	daily, dailyRemaining int // -1 when not reported
}

// New validates cfg, applies defaults and returns a client. It makes no
// request; call CheckProperties at start-up, which also proves the token.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
		hc = &http.Client{
			Transport: tr,
			// HubSpot's API does not redirect; following one could turn a
			// POST into a GET or send the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Client{
		cfg:     cfg,
		http:    hc,
		observe: cfg.Observe,
		rlHook:  cfg.RateLimit,
		now:     time.Now,
		sleep:   sleepCtx,
		search:  newSpacer(cfg.SearchRateLimit),
	}, nil
}

// String identifies the client without its token.
func (c *Client) String() string {
	return fmt.Sprintf("hubspot.Client{Connection:%q BaseURL:%q APIVersion:%q}", c.cfg.Connection, redactURL(c.cfg.BaseURL), c.cfg.APIVersion)
}

// GoString makes %#v as safe as %v.
func (c *Client) GoString() string { return c.String() }

// LogValue makes slog render the client without its token.
func (c *Client) LogValue() slog.Value { return c.cfg.LogValue() }

// Config returns the configuration in force, defaults applied; its
// formatting hides the token.
func (c *Client) Config() Config { return c.cfg }

// RateLimitStatus returns the latest X-HubSpot-RateLimit-* values seen
// (daily ones -1 when not reported, as for OAuth tokens), and false before
// any response carried them.
func (c *Client) RateLimitStatus() (limit, remaining int, interval time.Duration, daily, dailyRemaining int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rl
	return r.limit, r.remaining, r.interval, r.daily, r.dailyRemaining, r.known
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
	// sent: reads, searches, PATCH, and a property create (a repeat is
	// answered "exists", which CreateProperty confirms).
	repeatable retryPolicy = iota + 1
	// unsentOnly requests (contact create) may be sent again only when
	// they certainly were not applied: a 429 or 423, or a connection that
	// failed before anything was written. Anything else is returned as
	// Uncertain, so the application reconciles by lookup.
	unsentOnly
)

type call struct {
	op     string
	method string
	path   string // escaped path and query
	body   []byte
	policy retryPolicy
	search bool // counted against the search limit, not the interval
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// send performs k with pacing and retries. It returns the response for
// every status except those it handles itself: 429 and 477 (waited for,
// else RateLimited), 423 (waited for, else Transient), 5xx and 408
// (retried when repeatable, else Transient and Uncertain). Callers classify
// the rest with statusError.
func (c *Client) send(ctx context.Context, k call) (response, error) {
	var (
		waited   time.Duration
		retries  int
		failures int
	)
	// waitFor waits d before another attempt, or returns the error that
	// says when to come back if that exceeds the call's budget.
	waitFor := func(d time.Duration, fail func(d time.Duration) *ports.Error) error {
		if waited+d > c.cfg.MaxRateLimitWait || retries >= maxRateLimitRetries || pastDeadline(ctx, d) {
			return fail(d)
		}
		waited += d
		retries++
		if err := c.sleep(ctx, d); err != nil {
			pe := fail(d)
			pe.Err = err
			return pe
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return response{}, &ports.Error{Op: k.op, Kind: ports.Transient, Err: err}
		}
		budget := c.cfg.MaxRateLimitWait - waited
		var wait time.Duration
		var ok bool
		if k.search {
			wait, ok = c.search.admit(c.now(), budget)
		} else {
			wait, ok = c.pacer.admit(c.now(), budget)
		}
		if !ok {
			return response{}, c.notSent(k.op, wait)
		}
		if wait > 0 {
			if pastDeadline(ctx, wait) {
				c.withdraw(k)
				return response{}, c.notSent(k.op, wait)
			}
			waited += wait
			if err := c.sleep(ctx, wait); err != nil {
				c.withdraw(k)
				pe := c.notSent(k.op, wait)
				pe.Err = err
				return response{}, pe
			}
		}
		if !k.search {
			c.pacer.sent()
		}
		res, sent, err := c.attempt(ctx, k)
		if !k.search {
			c.pacer.answered()
		}
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
		switch s := res.status; {
		case s == http.StatusTooManyRequests:
			pe := c.statusError(k.op, res)
			if strings.EqualFold(parseErrorBody(res.header, res.body, c.scrub).policy, "DAILY") {
				// Nothing is left until the account's midnight: park the
				// work rather than hold the worker.
				pe.RetryAfter = c.cfg.DailyLimitWait
				return response{}, pe
			}
			if k.search {
				c.search.refused(c.now())
			}
			if err := waitFor(c.wait429(res, k.search), func(d time.Duration) *ports.Error { pe.RetryAfter = d; return pe }); err != nil {
				return response{}, err
			}
			continue
		case s == statusMigrating:
			pe := c.statusError(k.op, res)
			pe.RetryAfter = retryAfter(res.header, defaultMigrateWait)
			return response{}, pe
		case s == statusLocked:
			pe := c.statusError(k.op, res)
			//nolint:gosec // G404: jitter spreads the retries of a locked contact; nothing secret depends on it
			if err := waitFor(lockedWait+rand.N(rateLimitJitter), func(d time.Duration) *ports.Error { pe.RetryAfter = d; return pe }); err != nil {
				return response{}, err
			}
			continue
		case s >= 500 || s == http.StatusRequestTimeout:
			pe := c.statusError(k.op, res)
			if k.policy == unsentOnly {
				// HubSpot may have applied the create before failing.
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

func (c *Client) withdraw(k call) {
	if !k.search {
		c.pacer.withdraw()
	}
}

// notSent is the RateLimited error of a request the pacing kept back.
func (c *Client) notSent(op string, d time.Duration) *ports.Error {
	return &ports.Error{Op: op, Kind: ports.RateLimited, RetryAfter: d, Message: "rate-limit budget spent; request not sent"}
}

// wait429 is how long to wait after a 429 from the interval or search
// limit: Retry-After when sent (HubSpot documents none, its SDKs honour
// it), else a second for search, else the announced interval, plus jitter.
func (c *Client) wait429(res response, search bool) time.Duration {
	jitter := rand.N(rateLimitJitter) //nolint:gosec // G404: jitter spreads retries; nothing secret depends on it
	def := time.Second
	if !search {
		def = defaultInterval
		if ms, err := strconv.ParseInt(strings.TrimSpace(res.header.Get("X-HubSpot-RateLimit-Interval-Milliseconds")), 10, 64); err == nil && ms > 0 {
			def = time.Duration(ms) * time.Millisecond
		}
	}
	return min(retryAfter(res.header, def), maxHeaderWait) + jitter
}

// retryAfter reads Retry-After in seconds (Retry-After-Ms in milliseconds,
// as HubSpot's SDKs also accept), else def.
func retryAfter(h http.Header, def time.Duration) time.Duration {
	if ms, err := strconv.ParseInt(strings.TrimSpace(h.Get("Retry-After-Ms")), 10, 64); err == nil && ms >= 0 {
		return time.Duration(ms) * time.Millisecond
	}
	if sec, err := strconv.ParseInt(strings.TrimSpace(h.Get("Retry-After")), 10, 64); err == nil && sec >= 0 {
		return time.Duration(sec) * time.Second
	}
	return def
}

// pastDeadline reports whether waiting d would outlive ctx.
func pastDeadline(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < d
}

// backoff sleeps before retry number n (1-based), with full jitter over an
// exponential ceiling.
func (c *Client) backoff(ctx context.Context, n int) error {
	ceiling := min(backoffBase<<min(n-1, 10), backoffCap)
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
	req, err := http.NewRequestWithContext(actx, k.method, c.cfg.BaseURL+k.path, body)
	if err != nil {
		return response{}, false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	req.Header.Set("Accept", "application/json")
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

// recordRateLimit stores and reports the X-HubSpot-RateLimit-* headers.
// HubSpot may leave them out (search responses, OAuth calls for the daily
// ones, or when it failed to compute them); missing values are unknown,
// never zero.
func (c *Client) recordRateLimit(h http.Header) {
	num := func(name string) int {
		n, err := strconv.Atoi(strings.TrimSpace(h.Get(name)))
		if err != nil || n < 0 {
			return -1
		}
		return n
	}
	limit, remaining := num("X-HubSpot-RateLimit-Max"), num("X-HubSpot-RateLimit-Remaining")
	if limit < 0 && remaining < 0 {
		return
	}
	interval := defaultInterval
	if ms := num("X-HubSpot-RateLimit-Interval-Milliseconds"); ms > 0 {
		interval = time.Duration(ms) * time.Millisecond
	}
	interval = min(interval, maxHeaderWait)
	now := c.now()
	c.mu.Lock()
	c.rl = rateState{known: true, limit: limit, remaining: remaining, interval: interval,
		daily: num("X-HubSpot-RateLimit-Daily"), dailyRemaining: num("X-HubSpot-RateLimit-Daily-Remaining")}
	c.mu.Unlock()
	c.pacer.observe(limit, remaining, interval, now)
	if c.rlHook != nil && limit >= 0 && remaining >= 0 {
		c.rlHook(limit, remaining, now.Add(interval))
	}
}

// statusError classifies a non-success response.
func (c *Client) statusError(op string, res response) *ports.Error {
	env := parseErrorBody(res.header, res.body, c.scrub)
	pe := &ports.Error{Op: op, Status: res.status, Code: env.category, Message: env.message}
	if env.correlationID != "" {
		// What HubSpot's support asks for; no personal data.
		pe.Message = strings.TrimSpace(pe.Message + " (correlation id " + env.correlationID + ")")
	}
	if env.detail != "" {
		pe.Err = errors.New(env.detail)
	}
	switch s := res.status; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		// 401: a wrong or expired token; 403: a token without the scope.
		pe.Kind = ports.Unauthorized
	case s == http.StatusTooManyRequests || s == statusMigrating:
		pe.Kind = ports.RateLimited
	case s == http.StatusRequestTimeout || s == statusLocked || s >= 500:
		pe.Kind = ports.Transient
	case s == http.StatusNotFound || s == http.StatusGone:
		pe.Kind = ports.NotFound
	case s >= 400:
		// 400 VALIDATION_ERROR (unknown or read-only property, a value
		// that is not an option), 409 outside a create, 414: the same
		// request fails the same way every time.
		pe.Kind = ports.Permanent
	default:
		pe.Kind = ports.Transient
		if pe.Err == nil {
			pe.Err = fmt.Errorf("unexpected HTTP status %d", s)
		}
	}
	return pe
}

// fail wraps a classified error with the connection name.
func (c *Client) fail(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("hubspot %q: %w", c.cfg.Connection, err)
}

// scrub removes the token from text that came from elsewhere.
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
