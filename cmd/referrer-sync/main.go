// Command referrer-sync turns referrer.joined events on NATS JetStream into
// CRM contacts (Intercom leads or users, HubSpot contacts), exactly once,
// per campaign settings.
//
// Usage:
//
//	referrer-sync run --config FILE          run the service (--dry-run: report only)
//	referrer-sync validate --config FILE     check a configuration file
//	referrer-sync publish --config FILE --file EVENT.json
//	referrer-sync demo [--keep-running]      everything embedded, sample events
//	referrer-sync intercom-emulator --listen ADDR
//	referrer-sync hubspot-emulator --listen ADDR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/referrer-sync/referrer-sync/adapters/config"
)

const usage = `referrer-sync turns referrer.joined events on NATS JetStream into CRM contacts, exactly once.

Commands:
  run --config FILE [--dry-run]        run the service; --dry-run reports what it would do and writes nothing
  validate --config FILE               check a configuration file and print every problem
  publish --config FILE --file EVENT   publish a CloudEvents JSON file to the configured subject
  dlq list|show|replay --config FILE   inspect dead letters, or replay them to the subject (dlq -h)
  ledger show --config FILE --event ID | --email ADDRESS --connection NAME
                                       print what the exactly-once ledger holds for an event or a person
  demo [--keep-running]                run everything embedded with sample events and print the outcomes
  intercom-emulator --listen ADDR      run the Intercom API emulator
  hubspot-emulator --listen ADDR       run the HubSpot API emulator
  bench [--json] [--events N] [--quick]  measure throughput, latency, memory and rate limits (README: Performance)

Run "referrer-sync COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the process exit code: 0 success,
// 1 failure, 2 usage or configuration error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// What goes to stderr here has nowhere else to go if it fails: the
	// exit code still tells the outcome.
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = cmdRun(ctx, rest, stderr)
	case "validate":
		err = cmdValidate(rest, stdout)
	case "publish":
		err = cmdPublish(ctx, rest, stdout)
	case "dlq":
		err = cmdDLQ(ctx, rest, stdout, stderr)
	case "ledger":
		err = cmdLedger(ctx, rest, stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "bench":
		err = cmdBench(ctx, rest, stdout, stderr)
	case "intercom-emulator":
		err = cmdEmulator(ctx, rest, stderr)
	case "hubspot-emulator":
		err = cmdHubSpotEmulator(ctx, rest, stderr)
	case "-h", "--help", "help":
		if _, err := fmt.Fprint(stdout, usage); err != nil {
			return 1
		}
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		_, _ = fmt.Fprintln(stderr, "referrer-sync:", err)
		return 2
	default:
		_, _ = fmt.Fprintln(stderr, "referrer-sync:", err)
		return 1
	}
}

// usageError is a problem with the command line or the configuration file:
// exit code 2, as a restart will not help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// loadConfig reads and validates a file, printing every problem at once.
func loadConfig(path string) (*config.File, error) {
	f, _, err := loadConfigHash(path)
	return f, err
}

// loadConfigHash is loadConfig that also returns the SHA-256 (hex) of the
// bytes the configuration was parsed from, which reloads compare against.
func loadConfigHash(path string) (*config.File, string, error) {
	if path == "" {
		return nil, "", usageError{errors.New("--config FILE is required")}
	}
	b, err := os.ReadFile(path) //nolint:gosec // G304: the operator names the configuration file
	if err != nil {
		return nil, "", usageError{fmt.Errorf("config: %w", err)}
	}
	f, err := config.Parse(b)
	var keys *config.KeyError
	if err != nil && !errors.As(err, &keys) {
		return nil, "", usageError{err}
	}
	var problems []string
	if keys != nil {
		problems = append(problems, keys.Problems...)
	}
	if verr := f.Validate(); verr != nil {
		problems = append(problems, strings.Split(verr.Error(), "\n")...)
	}
	if len(problems) > 0 {
		return nil, "", usageError{fmt.Errorf("%s is invalid:\n  %s", path, strings.Join(problems, "\n  "))}
	}
	return f, contentHash(b), nil
}

func newLogger(w io.Writer, l config.Log) *slog.Logger {
	level := slog.LevelInfo
	switch l.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	// SIGHUP reloads the campaign settings. It is caught before anything
	// else: its default action would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file (YAML); its campaign settings reload on SIGHUP and when it changes")
	dryRun := fs.Bool("dry-run", false, "consume with the durable <nats.consumer>-dry-run and only log and count (referrer_sync_dry_run_events_total) what would happen; CRM reads only, no ledger or dead-letter writes")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	f, sum, err := loadConfigHash(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, f.Log)
	for _, w := range f.Warnings() {
		log.Warn(w)
	}
	in, err := start(ctx, f, options{logger: log, configPath: *path, configHash: sum, reload: hup, dryRun: *dryRun})
	if interrupted(err) {
		log.Info("referrer-sync stopped during start-up", "reason", err.Error())
		return nil
	}
	if err != nil {
		return err
	}
	return in.run(ctx)
}

func cmdValidate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	f, err := loadConfig(*path)
	if err != nil {
		return err
	}
	var out writes
	for _, w := range f.Warnings() {
		out.println(stdout, "warning:", w)
	}
	out.printf(stdout, "%s is valid: %d campaigns, %d connections\n", *path, len(f.Campaigns), len(f.Connections))
	return out.err
}
