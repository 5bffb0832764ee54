package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

// Tokens of the default test configuration.
const (
	tokA       = "tok-a" // workspace ws_a, unlimited, attributes rf_source_id and plan
	tokB       = "tok-b" // workspace ws_b, rate limit 3
	tokUnknown = "tok-nobody"
)

// start is the fake clock's initial time: 3 s into a 10-second window.
var start = time.Date(2026, 9, 1, 12, 0, 3, 0, time.UTC)

var idPattern = regexp.MustCompile(`^[0-9a-f]{24}$`)

// clock is a settable Config.Clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is an emulator behind a real HTTP server.
type env struct {
	t     *testing.T
	srv   *emulator.Server
	hs    *httptest.Server
	clock *clock
}

func defaultConfig() emulator.Config {
	return emulator.Config{
		Tokens: map[string]emulator.Workspace{
			tokA: {ID: "ws_a", Attributes: []string{"rf_source_id", "plan"}},
			tokB: {ID: "ws_b", RateLimit: 3, Region: "EU"},
		},
		Seed: 1,
	}
}

// newEnv starts cfg (defaultConfig if zero) with a fake clock unless
// cfg.Clock is set.
func newEnv(t *testing.T, cfg emulator.Config) *env {
	t.Helper()
	if cfg.Tokens == nil {
		cfg.Tokens = defaultConfig().Tokens
	}
	e := &env{t: t}
	if cfg.Clock == nil {
		e.clock = &clock{t: start}
		cfg.Clock = e.clock.Now
	}
	srv, err := emulator.New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	e.srv = srv
	e.hs = httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		e.hs.Close()
	})
	return e
}

// result is a decoded response.
type result struct {
	status int
	header http.Header
	raw    []byte
	obj    map[string]any
}

// errCode returns errors[0].code of an error envelope.
func (r result) errCode() string {
	return r.errField("code")
}

func (r result) errMessage() string {
	return r.errField("message")
}

func (r result) errField(k string) string {
	list, _ := r.obj["errors"].([]any)
	if len(list) == 0 {
		return ""
	}
	m, _ := list[0].(map[string]any)
	s, _ := m[k].(string)
	return s
}

func (r result) str(k string) string {
	s, _ := r.obj[k].(string)
	return s
}

// opt changes a request before it is sent.
type opt func(*http.Request)

func token(tok string) opt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}
func version(v string) opt { return func(r *http.Request) { r.Header.Set("Intercom-Version", v) } }
func header(k, v string) opt {
	return func(r *http.Request) {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
}

// do sends a request as tokA with Accept: application/json. body is sent
// as is if it is a string, else encoded as JSON.
func (e *env) do(method, path string, body any, opts ...opt) result {
	e.t.Helper()
	r := e.request(method, path, body, opts...)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	res := result{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			e.t.Fatalf("%s %s: body %q is not JSON: %v", method, path, raw, err)
		}
		res.obj, _ = v.(map[string]any)
	}
	return res
}

func (e *env) request(method, path string, body any, opts ...opt) *http.Request {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	r, err := http.NewRequest(method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatalf("NewRequest: %v", err)
	}
	r.Header.Set("Authorization", "Bearer "+tokA)
	r.Header.Set("Accept", "application/json")
	if rd != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// must sends a request and fails the test unless the status is want.
func (e *env) must(want int, method, path string, body any, opts ...opt) result {
	e.t.Helper()
	res := e.do(method, path, body, opts...)
	if res.status != want {
		e.t.Fatalf("%s %s: status %d (%s), want %d", method, path, res.status, res.raw, want)
	}
	return res
}

// create makes a contact and returns its id.
func (e *env) create(body map[string]any, opts ...opt) string {
	e.t.Helper()
	res := e.must(http.StatusOK, "POST", "/contacts", body, opts...)
	id := res.str("id")
	if !idPattern.MatchString(id) {
		e.t.Fatalf("created contact id %q, want 24 lowercase hex digits", id)
	}
	return id
}

// search runs a query and returns the ids found, in order, with the result.
func (e *env) search(body map[string]any, opts ...opt) ([]string, result) {
	e.t.Helper()
	res := e.must(http.StatusOK, "POST", "/contacts/search", body, opts...)
	var ids []string
	data, _ := res.obj["data"].([]any)
	for _, d := range data {
		m, _ := d.(map[string]any)
		id, _ := m["id"].(string)
		ids = append(ids, id)
	}
	return ids, res
}

func query(field, op string, value any) map[string]any {
	return map[string]any{"query": map[string]any{"field": field, "operator": op, "value": value}}
}

func group(op string, filters ...any) map[string]any {
	return map[string]any{"operator": op, "value": filters}
}

func filter(field, op string, value any) map[string]any {
	return map[string]any{"field": field, "operator": op, "value": value}
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
