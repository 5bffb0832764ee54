package hubspot

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
	"github.com/referrer-sync/referrer-sync/ports"
)

const (
	emuToken    = "pat-na1-emu_9f8e7d6c5b4a"
	emuLimited  = "pat-na1-limited_77aa"
	emuReadOnly = "pat-na1-readonly_55cc"
	emuBare     = "pat-na1-bare_1234" // an account without the marker property
)

// fakeClock is shared by the client and the emulator so rate-limit
// intervals pass without real waiting.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 9, 1, 12, 0, 3, 0, time.UTC)}
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

func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

func (f *fakeClock) Total() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum time.Duration
	for _, d := range f.slept {
		sum += d
	}
	return sum
}

// emuEnv is an emulator behind a real HTTP server, sharing a fake clock
// with the clients made from it.
type emuEnv struct {
	t     *testing.T
	emu   *emulator.Server
	url   string
	clock *fakeClock
}

func emulatorConfig() emulator.Config {
	return emulator.Config{
		Tokens: map[string]emulator.Account{
			emuToken: {ID: 1001, Properties: []string{DefaultMarkerProperty, "referral_link", "lead_source", "plain_id"},
				UniqueProperties: []string{"member_id"}},
			emuLimited:  {ID: 1002, RateLimit: 3, SearchRateLimit: 4, Properties: []string{DefaultMarkerProperty}},
			emuReadOnly: {ID: 1003, ReadOnly: true, Properties: []string{DefaultMarkerProperty}},
			emuBare:     {ID: 1004},
		},
		Seed: 7,
	}
}

// newEmu starts the emulator; mod adjusts its configuration.
func newEmu(t *testing.T, mod func(*emulator.Config)) *emuEnv {
	t.Helper()
	cfg := emulatorConfig()
	if mod != nil {
		mod(&cfg)
	}
	clock := newFakeClock()
	cfg.Clock = clock.Now
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	hs := httptest.NewServer(emu)
	t.Cleanup(func() {
		emu.Close()
		hs.Close()
	})
	return &emuEnv{t: t, emu: emu, url: hs.URL, clock: clock}
}

// client builds a client for token against the emulator; mod adjusts the
// config before New.
func (e *emuEnv) client(token string, mod func(*Config)) *Client {
	e.t.Helper()
	return newTestClient(e.t, e.url, token, e.clock, mod)
}

func newTestClient(t *testing.T, base, token string, clock *fakeClock, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{Connection: "test", BaseURL: base, Token: token, Timeout: 2 * time.Second}
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

// portsError returns the *ports.Error in err, failing the test without one.
func portsError(t *testing.T, err error) *ports.Error {
	t.Helper()
	var pe *ports.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ports.Error", err, err)
	}
	return pe
}
