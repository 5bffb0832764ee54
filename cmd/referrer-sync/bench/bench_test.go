package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// smokeOptions run every configuration with a few hundred events and a
// short emulator latency, so the whole harness runs in seconds even under
// the race detector. The rate-limit measurements need whole 10-second
// windows and are left to `referrer-sync bench`.
func smokeOptions() Options {
	return Options{
		Events: 300, Workers: 4, Latency: 2 * time.Millisecond, LatencyWorkers: []int{1, 8, 32, 128},
		LatencySeconds: 0.3, FlatFrom: 100, FlatTo: 400,
	}
}

// TestSmoke runs the harness end to end and checks that its results are
// well-formed and that every event of every configuration was processed.
// It asserts nothing about speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a JetStream server and runs every configuration")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	opt := smokeOptions()
	rep, err := Run(ctx, opt)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	wantNames := []string{NameBaseline, NamePipeline, NamePipelineLedger, NameEmulator}
	for _, w := range opt.LatencyWorkers {
		wantNames = append(wantNames, latencyName(opt.Latency, w))
	}
	if len(rep.Results) != len(wantNames) {
		t.Fatalf("%d results, want %d (%v)", len(rep.Results), len(wantNames), wantNames)
	}
	for i, r := range rep.Results {
		t.Run(r.Name, func(t *testing.T) {
			if r.Name != wantNames[i] {
				t.Errorf("result %d is %q, want %q", i, r.Name, wantNames[i])
			}
			if latency := strings.HasPrefix(r.Name, "emulator_"); latency {
				if r.Ideal <= 0 || r.Requested < 50 || r.Requested > opt.Events {
					t.Errorf("Ideal = %v, Requested = %d; want the latency-bound rate and 50 to %d events", r.Ideal, r.Requested, opt.Events)
				}
			} else if r.Requested != opt.Events {
				t.Errorf("Requested = %d, want %d", r.Requested, opt.Events)
			}
			if r.Events != r.Requested {
				t.Errorf("Events = %d, want %d: every event must reach an outcome", r.Events, r.Requested)
			}
			total := 0
			for _, n := range r.Outcomes {
				total += n
			}
			if total != r.Events {
				t.Errorf("outcomes %v add up to %d, want %d", r.Outcomes, total, r.Events)
			}
			if r.Outcomes[string(domain.OutcomeDeadLettered)] != 0 {
				t.Errorf("%d events dead-lettered; the mix has no bad events", r.Outcomes[string(domain.OutcomeDeadLettered)])
			}
			for name, v := range map[string]float64{
				"EventsPerSec": r.EventsPerSec, "RatioToBaseline": r.RatioToBaseline, "P50ms": r.P50ms, "P99ms": r.P99ms,
				"CPUusPerEvent": r.CPUusPerEvent, "PeakRSSMB": r.PeakRSSMB, "ServiceP50ms": r.ServiceP50ms,
			} {
				if !(v > 0) {
					t.Errorf("%s = %v, want > 0", name, v)
				}
			}
			if r.P99ms < r.P50ms || r.ServiceP99ms < r.ServiceP50ms {
				t.Errorf("p99 below p50: %v < %v or %v < %v", r.P99ms, r.P50ms, r.ServiceP99ms, r.ServiceP50ms)
			}
			if withLedger := r.Name != NameBaseline && r.Name != NamePipeline; withLedger && !(r.KVReadsPerEvent >= 0.9 && r.KVWritesPerEvent >= 1 && r.KVReadsPerEvent+r.KVWritesPerEvent <= 3.1) {
				// One read per event (a few are "nothing" events), one or
				// two compare-and-sets: the ledger's budget.
				t.Errorf("KV per event = %.2f reads + %.2f writes, want about 1 read and 1–2 writes", r.KVReadsPerEvent, r.KVWritesPerEvent)
			}
			if strings.HasPrefix(r.Name, "emulator") && r.RequestsPerEvent < 1 {
				t.Errorf("RequestsPerEvent = %v, want at least one request per event on average", r.RequestsPerEvent)
			}
		})
	}
	if rep.Results[0].RatioToBaseline != 1 {
		t.Errorf("baseline ratio = %v, want 1", rep.Results[0].RatioToBaseline)
	}
	if m := rep.Memory; m == nil || m.From != opt.FlatFrom || m.To != opt.FlatTo || !(m.RSSFromMB > 0) || !(m.RSSToMB > 0) {
		t.Errorf("Memory = %+v, want RSS read after %d and %d events", m, opt.FlatFrom, opt.FlatTo)
	}

	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != len(rep.Results) {
		t.Fatalf("--json printed %d lines, want one per configuration (%d)", len(lines), len(rep.Results))
	}
	for _, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("--json line %q: %v", line, err)
		}
		keys := []string{"name", "events", "events_per_sec", "ratio_to_baseline", "p50_ms", "p99_ms", "cpu_us_per_event", "peak_rss_mb"}
		// Configurations with the ledger add its operations per event.
		if _, ok := obj["kv_reads_per_event"]; ok {
			keys = append(keys, "kv_reads_per_event", "kv_writes_per_event")
		}
		if len(obj) != len(keys) {
			t.Errorf("--json object has keys %v, want exactly %v", obj, keys)
		}
		for _, k := range keys {
			if _, ok := obj[k]; !ok {
				t.Errorf("--json object %s lacks %q", line, k)
			}
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, name := range wantNames {
		if !strings.Contains(table.String(), name) {
			t.Errorf("table lacks %s:\n%s", name, table.String())
		}
	}
	t.Logf("\n%s", table.String())
}

// shared is the one JetStream server the benchmarks of a `go test -bench`
// run share, as the configurations of `referrer-sync bench` do, with the
// baseline rate the others are compared with.
var shared struct {
	once     sync.Once
	env      *Env
	err      error
	baseOnce sync.Once
	baseline float64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.env != nil {
		shared.env.Close()
	}
	os.Exit(code)
}

func benchEnv(b *testing.B) *Env {
	b.Helper()
	shared.once.Do(func() { shared.env, shared.err = NewEnv() })
	if shared.err != nil {
		b.Fatal(shared.err)
	}
	return shared.env
}

// baselineEvents is how many events the baseline the benchmarks' ratios
// refer to consumes: enough for a steady rate.
const baselineEvents = 20_000

func baselineRate(b *testing.B, env *Env) float64 {
	b.Helper()
	shared.baseOnce.Do(func() {
		if err := env.Publish(b.Context(), baselineEvents); err != nil {
			b.Fatal(err)
		}
		r, err := env.runBaseline(b.Context(), NameBaseline, baselineEvents)
		if err != nil {
			b.Fatal(err)
		}
		shared.baseline = r.EventsPerSec
	})
	return shared.baseline
}

// runBenchmark consumes b.N events of the mix with run and reports the
// harness's figures as metrics; ns/op is then the time per event.
func runBenchmark(b *testing.B, run func(ctx context.Context, env *Env, n int) (Result, error)) {
	b.Helper()
	env := benchEnv(b)
	base := baselineRate(b, env)
	if err := env.Publish(b.Context(), b.N); err != nil {
		b.Fatal(err)
	}
	resetPeak()
	b.ResetTimer()
	r, err := run(b.Context(), env, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if r.Events != b.N {
		b.Fatalf("%d of %d events processed", r.Events, b.N)
	}
	b.ReportMetric(r.EventsPerSec, "events/s")
	if base > 0 {
		b.ReportMetric(r.EventsPerSec/base, "ratio_to_baseline")
	}
	b.ReportMetric(r.P50ms, "p50_ms")
	b.ReportMetric(r.P99ms, "p99_ms")
	b.ReportMetric(r.CPUusPerEvent, "cpu_us/event")
	b.ReportMetric(float64(procStatus("VmHWM"))/(1<<20), "peak_rss_MB")
	if r.RequestsPerEvent > 0 {
		b.ReportMetric(r.RequestsPerEvent, "crm_req/event")
	}
	if r.Ideal > 0 {
		b.ReportMetric(100*r.EventsPerSec/r.Ideal, "%_of_ideal")
	}
}

func pipelineBenchmark(b *testing.B, sp spec) {
	b.Helper()
	runBenchmark(b, func(ctx context.Context, env *Env, n int) (Result, error) {
		sp.events = n
		r, _, _, err := env.runPipeline(ctx, sp)
		if sp.latency > 0 && r.RequestsPerEvent > 0 {
			r.Ideal = float64(sp.workers) / sp.latency.Seconds() / r.RequestsPerEvent
		}
		return r, err
	})
}

// BenchmarkBaseline is configuration (1): the raw jetstream pull consumer
// with a double ack per message.
func BenchmarkBaseline(b *testing.B) {
	runBenchmark(b, func(ctx context.Context, env *Env, n int) (Result, error) {
		return env.runBaseline(ctx, NameBaseline, n)
	})
}

// BenchmarkPipeline is configuration (2): consumer adapter and app.Service
// with an in-process no-op CRM, ledger off.
func BenchmarkPipeline(b *testing.B) {
	pipelineBenchmark(b, spec{name: NamePipeline, workers: DefaultOptions().Workers})
}

// BenchmarkPipelineLedger is configuration (3): (2) with the KV ledger.
func BenchmarkPipelineLedger(b *testing.B) {
	pipelineBenchmark(b, spec{name: NamePipelineLedger, workers: DefaultOptions().Workers, ledger: true})
}

// BenchmarkEmulator is configuration (4): (3) through the intercom adapter
// to the emulator over loopback HTTP.
func BenchmarkEmulator(b *testing.B) {
	pipelineBenchmark(b, spec{name: NameEmulator, workers: DefaultOptions().Workers, ledger: true, crm: crmEmulator})
}

// BenchmarkLatency is configuration (5): (4) with 20 ms added to every
// request, at each worker count.
func BenchmarkLatency(b *testing.B) {
	opt := DefaultOptions()
	for _, w := range opt.LatencyWorkers {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			pipelineBenchmark(b, spec{name: latencyName(opt.Latency, w), workers: w, ledger: true, crm: crmEmulator, latency: opt.Latency})
		})
	}
}
