package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
)

// cmdHubSpotEmulator serves the HubSpot emulator, for local development and
// for tests that drive the service as a separate process.
func cmdHubSpotEmulator(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("hubspot-emulator", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8090", "address to listen on")
	token := fs.String("token", "emulator-token", "accepted access token (private app or service key)")
	account := fs.Int64("account", 1, "portal id of the emulated account")
	props := fs.String("properties", "referral_link,lead_source", "comma-separated custom contact properties (text) that exist at start")
	unique := fs.String("unique-properties", "", "comma-separated custom contact properties with unique values that exist at start")
	rate := fs.Int("rate-limit", 0, "requests per 10-second interval, search excluded (0 = unlimited)")
	daily := fs.Int("daily-limit", 0, "requests per day (0 = unlimited)")
	search := fs.Int("search-rate-limit", 4, "search requests per second (0 = unlimited)")
	lag := fs.Duration("search-lag", 0, "how long a new contact stays invisible to search (reads by id or email are never delayed)")
	latency := fs.Duration("latency", 0, "added latency per request")
	seed := fs.Int64("seed", 1, "seed for ids and fault injection")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *token == "" {
		return usageError{errors.New("--token must not be empty")}
	}
	list := func(s string) []string {
		var out []string
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	emu, err := emulator.New(emulator.Config{
		Tokens: map[string]emulator.Account{*token: {
			ID: *account, RateLimit: *rate, DailyLimit: *daily, SearchRateLimit: *search,
			Properties: list(*props), UniqueProperties: list(*unique),
		}},
		SearchLag: *lag,
		Latency:   *latency,
		Seed:      *seed,
	})
	if err != nil {
		return usageError{err}
	}
	defer emu.Close()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	// The banner is for a person; the emulator serves whether or not it is seen.
	_, _ = fmt.Fprintf(stderr, "hubspot emulator listening on http://%s (state: /_emulator/contacts?account=%d, /_emulator/requests, /_emulator/faults)\n", ln.Addr(), *account)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
