// Package bench measures referrer-sync's throughput side by side with the
// raw JetStream consume rate it is bounded by, on one embedded JetStream
// server and the same pre-published events for every configuration:
//
//  1. baseline: the raw nats.go jetstream pull consumer (Consume) with a
//     double ack per message;
//  2. pipeline: the consumer adapter and app.Service (decode, decide, map),
//     an in-process no-op CRM, the ledger off;
//  3. pipeline_ledger: the same with the JetStream KV ledger on;
//  4. emulator: the same against the Intercom emulator over loopback HTTP
//     through the real intercom adapter;
//  5. emulator_<latency>_w<N>: the emulator adding latency to every
//     request, at several worker counts.
//
// It also checks that memory stays flat over a long run, counts the CRM
// requests each kind of event costs, and measures the intercom adapter's
// rate-limit pacing. `referrer-sync bench` prints the results;
// `go test -bench=. ./cmd/referrer-sync/bench/` runs the configurations as
// Go benchmarks.
//
// Everything runs in one process, so CPU time and RSS are the process's:
// they include the embedded NATS server and, in (4) and (5), the emulator.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// Options sizes a run. The zero value of a field selects its default
// (DefaultOptions), except where a zero is said to skip a part.
type Options struct {
	// Events is how many events configurations (1)–(4) consume.
	Events int
	// PipelineOnly runs (1)–(3) alone: the ratios that are the targets,
	// in a minute.
	PipelineOnly bool
	// Workers is the worker count of (2)–(4): the service's default.
	Workers int
	// Repeats is how many times (1)–(3) run, the median reported; 0 runs
	// them once.
	Repeats int
	// Latency is what the emulator adds to every request in (5).
	Latency time.Duration
	// LatencyWorkers are the worker counts of (5).
	LatencyWorkers []int
	// LatencySeconds sizes each (5) run: as many events as the ideal rate
	// (workers ÷ latency ÷ requests per event) finishes in this long,
	// capped at Events. A worker count the CPU cannot feed runs longer.
	LatencySeconds float64
	// FlatFrom and FlatTo are the event counts after which RSS is compared
	// in the memory-flatness run; FlatTo 0 skips it.
	FlatFrom, FlatTo int
	// RateLimitSeconds is how long each rate-limit measurement runs; 0
	// skips them. They need whole 10-second windows: 30 or more.
	RateLimitSeconds float64
	// SkipCalls skips counting the CRM requests per kind of event.
	SkipCalls bool
	// ProfileDir, if set, receives a CPU profile of each configuration,
	// NAME.pprof, for `go tool pprof -top`.
	ProfileDir string
	// Progress, if set, receives a line as each part starts and ends.
	Progress io.Writer
}

// DefaultOptions are the sizes of the README's table.
func DefaultOptions() Options {
	return Options{
		Events: 50_000, Workers: 32, Repeats: 3, Latency: 20 * time.Millisecond, LatencyWorkers: []int{1, 8, 32, 128},
		LatencySeconds: 15, FlatFrom: 20_000, FlatTo: 200_000, RateLimitSeconds: 50,
	}
}

// QuickOptions finish in about two minutes.
func QuickOptions() Options {
	o := DefaultOptions()
	o.Events, o.Repeats, o.LatencySeconds, o.FlatFrom, o.FlatTo, o.RateLimitSeconds = 5_000, 1, 3, 2_000, 20_000, 30
	return o
}

func (o *Options) setDefaults() {
	d := DefaultOptions()
	if o.Events <= 0 {
		o.Events = d.Events
	}
	if o.Workers <= 0 {
		o.Workers = d.Workers
	}
	if o.Repeats <= 0 {
		o.Repeats = 1
	}
	if o.Latency <= 0 {
		o.Latency = d.Latency
	}
	if len(o.LatencyWorkers) == 0 {
		o.LatencyWorkers = d.LatencyWorkers
	}
	if o.LatencySeconds <= 0 {
		o.LatencySeconds = d.LatencySeconds
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Result is one configuration's measurements. The tagged fields are the
// --json contract; the others are shown in the table only.
type Result struct {
	Name            string  `json:"name"`
	Events          int     `json:"events"`
	EventsPerSec    float64 `json:"events_per_sec"`
	RatioToBaseline float64 `json:"ratio_to_baseline"`
	// P50ms and P99ms are publish→done: from when the event entered the
	// stream, or, for the backlog every configuration starts with, from
	// when the configuration began consuming.
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	CPUusPerEvent float64 `json:"cpu_us_per_event"`
	// PeakRSSMB is the process's peak resident set during the
	// configuration (MiB), measured from a reset of the kernel's mark.
	PeakRSSMB float64 `json:"peak_rss_mb"`

	// Requested is how many events the configuration was to finish; a
	// run that ends with Events below it failed.
	Requested int     `json:"-"`
	Seconds   float64 `json:"-"`
	Workers   int     `json:"-"`
	// ServiceP50ms and ServiceP99ms are delivery→done: one event's own
	// processing, without the wait in the backlog.
	ServiceP50ms, ServiceP99ms float64 `json:"-"`
	// RequestsPerEvent is the CRM requests per finished event.
	RequestsPerEvent float64 `json:"-"`
	// KVReadsPerEvent and KVWritesPerEvent are the ledger operations the
	// service asked per finished event (reads, compare-and-set writes).
	KVReadsPerEvent  float64 `json:"kv_reads_per_event,omitempty"`
	KVWritesPerEvent float64 `json:"kv_writes_per_event,omitempty"`
	// Ideal, for (5), is workers ÷ (latency × requests per event): the
	// rate if only the CRM's latency bound it.
	Ideal    float64        `json:"-"`
	Outcomes map[string]int `json:"-"`
	Retries  map[string]int `json:"-"`
	// Runs are the rates of every run of a configuration that ran more
	// than once (see Options.Repeats); the others are of the median one.
	Runs []float64 `json:"-"`
}

// Report is everything one Run measured.
type Report struct {
	Machine   Machine
	Options   Options
	Results   []Result
	Memory    *Flatness
	Calls     []Calls
	RateLimit []RateLimitResult
	// PeakPerConfig reports whether the peak RSS could be reset before
	// each configuration; if not, each peak is the process's so far.
	PeakPerConfig bool
	Elapsed       time.Duration
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int
	Model     string
	GoVersion string
	OS        string
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Configuration names, stable for scripts reading --json.
const (
	NameBaseline       = "baseline"
	NamePipeline       = "pipeline"
	NamePipelineLedger = "pipeline_ledger"
	NameEmulator       = "emulator"
)

// startProfile starts a CPU profile into dir/name.pprof; the returned
// function stops it and reports whether the profile was written whole.
// Without dir it does nothing.
func startProfile(dir, name string) (stop func() error, err error) {
	if dir == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof")) //nolint:gosec // G304: the operator names the profile folder
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close() // nothing was written; the start error is the one to report
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// median returns the run with the median rate, with the rates of all the
// runs in Runs and the highest peak RSS among them.
func median(runs []Result) Result {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b Result) int { return cmp.Compare(a.EventsPerSec, b.EventsPerSec) })
	m := sorted[len(sorted)/2]
	for _, r := range runs {
		m.Runs = append(m.Runs, r.EventsPerSec)
		m.PeakRSSMB = max(m.PeakRSSMB, r.PeakRSSMB)
	}
	return m
}

// latencyName is the name of a (5) configuration.
func latencyName(latency time.Duration, workers int) string {
	return fmt.Sprintf("emulator_%s_w%d", latency, workers)
}

// Run measures every configuration in order of expected memory, then the
// memory-flatness run, the CRM requests per kind of event and the rate
// limits.
func Run(ctx context.Context, opt Options) (*Report, error) {
	opt.setDefaults()
	began := time.Now()
	rep := &Report{Machine: machine(), Options: opt}
	env, err := NewEnv()
	if err != nil {
		return nil, err
	}
	defer env.Close()
	progress := func(format string, args ...any) {
		// Progress is for a person watching; a lost line changes no result.
		_, _ = fmt.Fprintf(opt.Progress, "%7.1fs  %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	progress("publishing %d events", opt.Events)
	if err := env.Publish(ctx, opt.Events); err != nil {
		return nil, err
	}
	measure := func(name string, f func() (Result, error)) (Result, error) {
		progress("%s: running", name)
		rep.PeakPerConfig = resetPeak()
		stopProfile, err := startProfile(opt.ProfileDir, name)
		if err != nil {
			return Result{}, err
		}
		r, err := f()
		if perr := stopProfile(); perr != nil && err == nil {
			err = fmt.Errorf("cpu profile: %w", perr)
		}
		if err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		r.PeakRSSMB = float64(procStatus("VmHWM")) / (1 << 20)
		progress("%s: %d events, %.0f/s, cpu %.0f µs/event", name, r.Events, r.EventsPerSec, r.CPUusPerEvent)
		return r, nil
	}
	// The first consumer of a fresh stream pays for warming the server's
	// caches; a short unreported pass keeps that out of the baseline.
	if _, err := env.runBaseline(ctx, "warm-up", min(opt.Events, 5_000)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	// (1)–(3) take seconds each and their ratios are the targets, so they
	// run Repeats times, interleaved so that a slow spell of the machine
	// touches all three, and the run with the median rate is reported.
	fast := []struct {
		name string
		run  func() (Result, error)
	}{
		{NameBaseline, func() (Result, error) { return env.runBaseline(ctx, NameBaseline, opt.Events) }},
		{NamePipeline, func() (Result, error) {
			r, _, _, err := env.runPipeline(ctx, spec{name: NamePipeline, events: opt.Events, workers: opt.Workers})
			return r, err
		}},
		{NamePipelineLedger, func() (Result, error) {
			r, _, _, err := env.runPipeline(ctx, spec{name: NamePipelineLedger, events: opt.Events, workers: opt.Workers, ledger: true})
			return r, err
		}},
	}
	runs := map[string][]Result{}
	for range opt.Repeats {
		for _, f := range fast {
			r, err := measure(f.name, f.run)
			if err != nil {
				return nil, err
			}
			runs[f.name] = append(runs[f.name], r)
		}
	}
	for _, f := range fast {
		rep.Results = append(rep.Results, median(runs[f.name]))
	}
	if opt.PipelineOnly {
		for i := range rep.Results {
			rep.Results[i].RatioToBaseline = rep.Results[i].EventsPerSec / rep.Results[0].EventsPerSec
		}
		rep.Elapsed = time.Since(began)
		return rep, nil
	}
	r, err := measure(NameEmulator, func() (Result, error) {
		r, _, _, err := env.runPipeline(ctx, spec{name: NameEmulator, events: opt.Events, workers: opt.Workers, ledger: true, crm: crmEmulator})
		return r, err
	})
	if err != nil {
		return nil, err
	}
	rep.Results = append(rep.Results, r)
	perEvent := rep.Results[len(rep.Results)-1].RequestsPerEvent
	if perEvent <= 0 {
		perEvent = 2 // a search and a create
	}
	for _, w := range opt.LatencyWorkers {
		ideal := float64(w) / opt.Latency.Seconds() / perEvent
		n := min(max(int(ideal*opt.LatencySeconds), 50), opt.Events)
		sp := spec{name: latencyName(opt.Latency, w), events: n, workers: w, ledger: true, crm: crmEmulator, latency: opt.Latency}
		r, err := measure(sp.name, func() (Result, error) {
			r, _, _, err := env.runPipeline(ctx, sp)
			r.Ideal = float64(w) / opt.Latency.Seconds() / r.RequestsPerEvent
			return r, err
		})
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, r)
	}
	for i := range rep.Results {
		rep.Results[i].RatioToBaseline = rep.Results[i].EventsPerSec / rep.Results[0].EventsPerSec
	}
	if opt.FlatTo > 0 {
		progress("memory: %d → %d events (pipeline, ledger off)", opt.FlatFrom, opt.FlatTo)
		if rep.Memory, err = env.flatness(ctx, opt); err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
	}
	if !opt.SkipCalls {
		progress("CRM requests per kind of event")
		if rep.Calls, err = env.calls(ctx); err != nil {
			return nil, fmt.Errorf("calls: %w", err)
		}
	}
	if opt.RateLimitSeconds > 0 {
		if rep.RateLimit, err = env.rateLimits(ctx, opt, progress); err != nil {
			return nil, fmt.Errorf("rate limits: %w", err)
		}
	}
	rep.Elapsed = time.Since(began)
	return rep, nil
}
