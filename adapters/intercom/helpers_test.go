package intercom

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/ports"
)

const testToken = "tok_Sup3rS3cret_abcdef0123456789"

// fakeClock is shared by the client (and, in emulator tests, the emulator)
// so rate-limit windows pass without real waiting.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
	f.slept = append(f.slept, d)
	return nil
}

func (f *fakeClock) Slept() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.slept...)
}

func (f *fakeClock) Total() time.Duration {
	var sum time.Duration
	for _, d := range f.Slept() {
		sum += d
	}
	return sum
}

// newTestClient builds a client for base with a fake clock. mod adjusts the
// config before New.
func newTestClient(t *testing.T, base string, clock *fakeClock, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{Connection: "test", BaseURL: base, Token: testToken, Timeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if clock != nil {
		c.now = clock.Now
		c.sleep = clock.Sleep
	}
	return c
}

// recorded is one request seen by a test server.
type recorded struct {
	Method string
	Path   string // escaped
	Query  string
	Header http.Header
	Body   []byte
}

// recorder is an http.Handler that records requests and answers with the
// next scripted handler (the last one repeats).
type recorder struct {
	mu       sync.Mutex
	reqs     []recorded
	handlers []http.HandlerFunc
}

func script(hs ...http.HandlerFunc) *recorder { return &recorder{handlers: hs} }

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	n := len(r.reqs)
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.EscapedPath(), req.URL.RawQuery, req.Header.Clone(), body})
	h := r.handlers[min(n, len(r.handlers)-1)]
	r.mu.Unlock()
	req.Body = io.NopCloser(strings.NewReader(string(body)))
	h(w, req)
}

func (r *recorder) Requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func jsonReply(status int, v any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
}

func errReply(status int, code, msg string) http.HandlerFunc {
	return jsonReply(status, map[string]any{
		"type":   "error.list",
		"errors": []map[string]any{{"code": code, "message": msg}},
	})
}

func contactReply(id, role, email, xid string, created int64) http.HandlerFunc {
	return jsonReply(http.StatusOK, contactObj(id, role, email, xid, created))
}

func contactObj(id, role, email, xid string, created int64) map[string]any {
	var x any
	if xid != "" {
		x = xid
	}
	return map[string]any{"type": "contact", "id": id, "role": role, "email": email, "external_id": x, "created_at": created}
}

// lostResponse reads the request, then drops the connection without an
// answer: the server may have acted, the client cannot know.
func lostResponse(w http.ResponseWriter, _ *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close() // dropping the connection is the point; how it closes is not
	}
}

func asPortsError(t *testing.T, err error) *ports.Error {
	t.Helper()
	var pe *ports.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ports.Error", err, err)
	}
	return pe
}

func decodeBody(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("request body %q is not a JSON object: %v", b, err)
	}
	return m
}

func ioNopCloser(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }

func mustRead(r *http.Request) []byte {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		panic(err)
	}
	return b
}

// mustJSON renders v canonically (encoding/json sorts map keys).
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// hang returns a handler that does not answer until the client gives up
// (or 5 s pass, so a server Close never waits forever). The request body is
// drained first: only then does the server notice a client going away.
func hang(t *testing.T) http.HandlerFunc {
	t.Helper()
	return func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}
}
