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

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

// emulatedWorkspace is the id of the one workspace intercom-emulator serves.
const emulatedWorkspace = "emulated"

// cmdEmulator serves the Intercom emulator, for local development and for
// tests that drive the service as a separate process.
func cmdEmulator(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("intercom-emulator", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8089", "address to listen on")
	token := fs.String("token", "emulator-token", "accepted access token")
	attrs := fs.String("attributes", "referral_link,lead_source", "comma-separated custom contact attributes that exist at start")
	rate := fs.Int("rate-limit", 0, "requests per 10-second window (0 = unlimited)")
	lag := fs.Duration("search-lag", 0, "how long a new contact stays invisible to search")
	latency := fs.Duration("latency", 0, "added latency per request")
	seed := fs.Int64("seed", 1, "seed for ids and fault injection")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *token == "" {
		return usageError{errors.New("--token must not be empty")}
	}
	var names []string
	for _, a := range strings.Split(*attrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			names = append(names, a)
		}
	}
	emu, err := emulator.New(emulator.Config{
		Tokens:    map[string]emulator.Workspace{*token: {ID: emulatedWorkspace, RateLimit: *rate, Attributes: names}},
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
	// Contacts are per workspace: the banner names the one the token opens.
	// The banner is for a person; the emulator serves whether or not it is seen.
	_, _ = fmt.Fprintf(stderr, "intercom emulator listening on http://%[1]s (state: http://%[1]s/_emulator/contacts?workspace=%[2]s, /_emulator/requests, /_emulator/faults)\n",
		ln.Addr(), emulatedWorkspace)
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
