package hubspot

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

const stubToken = "pat-na1-Sup3rS3cret_abcdef0123"

// stub answers requests from a script, one reply per request, the last
// repeating.
type stub struct {
	mu      sync.Mutex
	replies []reply
	calls   []string
}

type reply struct {
	status int
	header map[string]string
	body   string
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	rp := s.replies[min(len(s.calls)-1, len(s.replies)-1)]
	s.mu.Unlock()
	for k, v := range rp.header {
		w.Header().Set(k, v)
	}
	if rp.header["Content-Type"] == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(rp.status)
	_, _ = fmt.Fprint(w, rp.body) // the client under test reports a cut body
}

func (s *stub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func hubErr(category, msg string) string {
	return fmt.Sprintf(`{"status":"error","message":%q,"correlationId":"c0ffee00-0000-4000-8000-000000000001","category":%q}`, msg, category)
}

const contactOK = `{"id":"501","properties":{"email":"a@example.com","lifecyclestage":"lead"},"createdAt":"2026-09-01T12:00:00.000Z","archived":false}`

func TestStatusHandling(t *testing.T) {
	create := func(c *Client) error {
		_, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
		return err
	}
	createMarked := func(c *Client) error {
		got, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Marker: "ev-1"})
		if err == nil && got.ID != "501" {
			err = fmt.Errorf("created %+v, want 501", got)
		}
		if err == nil && got.Existing != (c.cfg.Connection != "own") {
			err = fmt.Errorf("created %+v: Existing wrong for connection %q", got, c.cfg.Connection)
		}
		return err
	}
	own := func(c *Config) { c.Connection = "own" }
	update := func(c *Client) error { return c.Update(ctx, "501", domain.Contact{Name: "A"}) }
	find := func(c *Client) error {
		_, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
		return err
	}
	tests := []struct {
		name          string
		replies       []reply
		do            func(*Client) error
		wantKind      ports.ErrorKind // 0: success
		wantUncertain bool
		wantCalls     int
		wantIn        string
		wantWait      time.Duration // at least this much slept
		mod           func(*Config)
	}{
		{"423 on create: locked, not applied, retried", []reply{{423, nil, hubErr("LOCKED", "locked")}, {201, nil, contactOK}},
			create, 0, false, 2, "", lockedWait, nil},
		{"423 beyond the budget", []reply{{423, nil, hubErr("LOCKED", "locked")}},
			update, ports.Transient, false, 2, "HTTP 423", lockedWait, func(c *Config) { c.MaxRateLimitWait = 3 * time.Second }},
		{"477 migration: RateLimited with Retry-After", []reply{{477, map[string]string{"Retry-After": "3600"}, hubErr("MIGRATION_IN_PROGRESS", "moving")}},
			find, ports.RateLimited, false, 1, "HTTP 477", 0, nil},
		{"429 with Retry-After", []reply{{429, map[string]string{"Retry-After": "2"}, `{"status":"error","message":"You have reached your ten secondly limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}`}, {200, nil, contactOK}},
			find, 0, false, 2, "", 2 * time.Second, nil},
		{"HTML 502 on a read, then success", []reply{{502, map[string]string{"Content-Type": "text/html"}, "<html>Bad Gateway</html>"}, {200, nil, contactOK}},
			find, 0, false, 2, "", 0, nil},
		{"HTML 504 on a create", []reply{{504, map[string]string{"Content-Type": "text/html"}, "<html>Gateway Time-out</html>"}},
			create, ports.Transient, true, 1, "unexpected error body (text/html", 0, nil},
		{"409 without an id, contact not found", []reply{{409, nil, hubErr("CONFLICT", "Something already exists.")}, {404, nil, hubErr("OBJECT_NOT_FOUND", "Object not found.")}},
			create, ports.Permanent, false, 2, "conflict without an existing contact id", 0, nil},
		{"409 without an id, found by email", []reply{{409, nil, hubErr("CONFLICT", "Something already exists.")}, {200, nil, contactOK}},
			create, 0, false, 2, "", 0, nil},
		{"409 naming a contact with this create's marker: its own", []reply{{409, nil, hubErr("CONFLICT", "Contact already exists. Existing ID: 501")},
			{200, nil, `{"id":"501","properties":{"email":"a@example.com","referrer_sync_event_id":"ev-1"}}`}},
			createMarked, 0, false, 2, "", 0, own},
		{"409 naming a contact with another marker: existing", []reply{{409, nil, hubErr("CONFLICT", "Contact already exists. Existing ID: 501")},
			{200, nil, `{"id":"501","properties":{"email":"a@example.com","referrer_sync_event_id":"ev-0"}}`}},
			createMarked, 0, false, 2, "", 0, nil},
		{"409 and the marker cannot be read: existing", []reply{{409, nil, hubErr("CONFLICT", "Contact already exists. Existing ID: 501")},
			{500, nil, hubErr("INTERNAL_ERROR", "internal error")}},
			createMarked, 0, false, 1 + DefaultMaxAttempts, "", 0, nil},
		{"409 on update: email taken", []reply{{409, nil, hubErr("CONFLICT", "Contact already exists. Existing ID: 7")}},
			update, ports.Permanent, false, 1, "CONFLICT", 0, nil},
		{"404 on update", []reply{{404, nil, hubErr("OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.")}},
			update, ports.NotFound, false, 1, "OBJECT_NOT_FOUND", 0, nil},
		{"201 with an unreadable body", []reply{{201, nil, `{"properties":{}}`}},
			create, ports.Transient, true, 1, "no id", 0, nil},
		{"redirect not followed", []reply{{302, map[string]string{"Location": "https://elsewhere.example/"}, ""}},
			find, ports.Transient, false, 1, "unexpected HTTP status 302", 0, nil},
		{"414", []reply{{414, nil, hubErr("VALIDATION_ERROR", "URI too long")}},
			find, ports.Permanent, false, 1, "HTTP 414", 0, nil},
		{"token echoed by the server is scrubbed", []reply{{400, nil, hubErr("VALIDATION_ERROR", "bad token "+stubToken)}},
			update, ports.Permanent, false, 1, "bad token [redacted]", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &stub{replies: tt.replies}
			hs := httptest.NewServer(s)
			defer hs.Close()
			clock := newFakeClock()
			c := newTestClient(t, hs.URL, stubToken, clock, tt.mod)
			err := tt.do(c)
			if tt.wantKind == 0 {
				if err != nil {
					t.Fatalf("error = %v, want success", err)
				}
			} else {
				pe := portsError(t, err)
				if pe.Kind != tt.wantKind || pe.Uncertain != tt.wantUncertain || !strings.Contains(err.Error(), tt.wantIn) {
					t.Errorf("error = %v (kind %v, uncertain %v); want %v, uncertain %v, mentioning %q",
						err, pe.Kind, pe.Uncertain, tt.wantKind, tt.wantUncertain, tt.wantIn)
				}
				if strings.Contains(err.Error(), stubToken) {
					t.Errorf("error contains the token")
				}
				if tt.wantKind == ports.RateLimited && pe.RetryAfter != time.Hour {
					t.Errorf("RetryAfter = %v, want 1h from Retry-After", pe.RetryAfter)
				}
			}
			if n := s.count(); n != tt.wantCalls {
				t.Errorf("calls = %d %v, want %d", n, s.calls, tt.wantCalls)
			}
			if clock.Total() < tt.wantWait {
				t.Errorf("waited %v, want at least %v", clock.Total(), tt.wantWait)
			}
		})
	}
}

func TestCreateRetriedOnlyWhenNotSent(t *testing.T) {
	// A port nobody listens on: the dial fails, so the create was
	// certainly not applied and is retried, then reported as certain.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	var attempts int
	c := newTestClient(t, "http://"+addr, stubToken, clock, func(c *Config) {
		c.Observe = func(string, int, time.Duration) { attempts++ }
	})
	_, err = c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
	pe := portsError(t, err)
	if pe.Kind != ports.Transient || pe.Uncertain || attempts != DefaultMaxAttempts {
		t.Errorf("Create = %v (uncertain %v) after %d attempts; want Transient, certain, %d attempts", err, pe.Uncertain, attempts, DefaultMaxAttempts)
	}
}

func TestRateLimitHeadersReported(t *testing.T) {
	s := &stub{replies: []reply{{200, map[string]string{
		"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Remaining": "187", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
		"X-HubSpot-RateLimit-Daily": "625000", "X-HubSpot-RateLimit-Daily-Remaining": "624000",
	}, contactOK}}}
	hs := httptest.NewServer(s)
	defer hs.Close()
	clock := newFakeClock()
	var got []string
	c := newTestClient(t, hs.URL, stubToken, clock, func(c *Config) {
		c.RateLimit = func(limit, remaining int, reset time.Time) {
			got = append(got, fmt.Sprint(limit, remaining, reset.Sub(clock.Now())))
		}
	})
	if _, err := c.Find(ctx, domain.Identity{Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "190 187 10s" {
		t.Errorf("RateLimit hook got %v", got)
	}
	limit, remaining, interval, daily, dailyRemaining, ok := c.RateLimitStatus()
	if !ok || limit != 190 || remaining != 187 || interval != 10*time.Second || daily != 625000 || dailyRemaining != 624000 {
		t.Errorf("RateLimitStatus = %d %d %v %d %d %v", limit, remaining, interval, daily, dailyRemaining, ok)
	}
}

func TestTokenNeverFormatted(t *testing.T) {
	cfg := Config{Connection: "hs", Token: stubToken, BaseURL: "https://user:pw@api.example"}
	c, err := New(Config{Connection: "hs", Token: stubToken})
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "cfg", cfg, "client", c)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), logged.String()} {
		if strings.Contains(s, stubToken) || strings.Contains(s, "pw@") {
			t.Errorf("formatted output leaks a secret: %s", s)
		}
	}
}
