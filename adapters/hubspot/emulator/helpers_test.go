package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
)

// Tokens of the default test configuration.
const (
	tokA       = "tok-a" // account 101: unlimited, custom property referral_link, unique property member_id
	tokB       = "tok-b" // account 102: 3 per 10 s, daily 5, search 2/s
	tokRO      = "tok-ro"
	tokUnknown = "tok-nobody"
)

// start is the fake clock's initial time: 3 s into a 10-second interval.
var start = time.Date(2026, 9, 1, 12, 0, 3, 0, time.UTC)

const contacts = "/crm/objects/2026-03/contacts"

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

type env struct {
	t     *testing.T
	srv   *emulator.Server
	hs    *httptest.Server
	clock *clock
}

func defaultConfig() emulator.Config {
	return emulator.Config{
		Tokens: map[string]emulator.Account{
			tokA:  {ID: 101, Properties: []string{"referral_link", "referrer_sync_event_id"}, UniqueProperties: []string{"member_id"}},
			tokB:  {ID: 102, RateLimit: 3, DailyLimit: 5, SearchRateLimit: 2},
			tokRO: {ID: 103, ReadOnly: true},
		},
		Seed: 1,
	}
}

// newEnv starts cfg (defaultConfig's tokens if it has none) with a fake
// clock.
func newEnv(t *testing.T, cfg emulator.Config) *env {
	t.Helper()
	if cfg.Tokens == nil {
		cfg.Tokens = defaultConfig().Tokens
	}
	e := &env{t: t, clock: &clock{t: start}}
	cfg.Clock = e.clock.Now
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

type result struct {
	status int
	header http.Header
	body   []byte
	err    error // transport error (a lost response)
}

func (r result) json() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.body, &m) // a body that is not a JSON object has no fields; callers check the fields they need
	return m
}

func (r result) str(k string) string {
	s, _ := r.json()[k].(string)
	return s
}

func (r result) prop(k string) any {
	props, _ := r.json()["properties"].(map[string]any)
	v, ok := props[k]
	if !ok {
		return "<absent>"
	}
	return v
}

// do sends a request with token tok ("" for none).
func (e *env) do(method, path string, body any, tok string) result {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		return result{err: err}
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	data, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: data}
}

// must sends as tokA and fails unless the status is want.
func (e *env) must(want int, method, path string, body any) result {
	e.t.Helper()
	r := e.do(method, path, body, tokA)
	if r.status != want {
		e.t.Fatalf("%s %s = %d %s (err %v), want %d", method, path, r.status, r.body, r.err, want)
	}
	return r
}

func props(kv ...string) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return map[string]any{"properties": m}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
