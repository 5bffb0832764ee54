package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/referrer-sync/referrer-sync/cmd/referrer-sync/bench"
)

// cmdBench runs the benchmark harness and prints its table, or one JSON
// object per configuration with --json. Progress goes to stderr, so stdout
// holds only the results.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per configuration instead of the table")
	events := fs.Int("events", 0, "events per configuration (default 50000; 5000 with --quick)")
	quick := fs.Bool("quick", false, "smaller counts and shorter rate-limit runs: about three minutes")
	workers := fs.Int("workers", 0, "workers of the pipeline configurations (default: the service's default)")
	pipeline := fs.Bool("pipeline", false, "run only baseline, pipeline and pipeline_ledger (the target ratios)")
	profile := fs.String("profile", "", "write a CPU profile of each configuration to `DIR`/NAME.pprof")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))}
	}
	if *events < 0 {
		return usageError{fmt.Errorf("bench: --events %d is negative", *events)}
	}
	opt := bench.DefaultOptions()
	if *quick {
		opt = bench.QuickOptions()
	}
	if *events > 0 {
		opt.Events = *events
	}
	if *workers > 0 {
		opt.Workers = *workers
	}
	opt.Progress, opt.ProfileDir, opt.PipelineOnly = stderr, *profile, *pipeline
	rep, err := bench.Run(ctx, opt)
	if err != nil {
		return err
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}
