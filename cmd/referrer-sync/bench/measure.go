package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cpuTime is the process's user plus system CPU time so far. It covers
// every goroutine of the process: the pipeline, and also the embedded NATS
// server and, where used, the emulator, which run in the same process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus reads a "kB" field of /proc/self/status (VmRSS, VmHWM) in
// bytes; 0 where /proc is not available.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }() // read only; a close error loses nothing
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, rest, ok := strings.Cut(s.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// resetPeak returns freed memory to the operating system and resets the
// kernel's peak-RSS mark (VmHWM) to the current RSS, so that the peak read
// after a configuration is that configuration's. It reports whether the
// reset worked (Linux 4.0+, /proc/self/clear_refs writable); without it the
// peak is the process's since it started.
func resetPeak() bool {
	runtime.GC()
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// sample is one configuration's raw measurements.
type sample struct {
	mu      sync.Mutex
	start   time.Time
	cpu0    time.Duration
	done    int
	want    int
	last    time.Time
	lat     []time.Duration // publish (or configuration start) → done
	svc     []time.Duration // delivery → done
	full    chan struct{}
	outcome map[string]int
}

func newSample(want int) *sample {
	return &sample{want: want, full: make(chan struct{}), outcome: map[string]int{}, lat: make([]time.Duration, 0, want), svc: make([]time.Duration, 0, want)}
}

// begin marks the start of the timed phase.
func (s *sample) begin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cpu0 = cpuTime()
	s.start = time.Now()
}

// finish records one event that reached its final outcome. published is
// when it entered the stream; a backlog event published before the timed
// phase began counts from the start of the phase, because that is when
// this configuration could first have taken it. received is when its
// delivery reached the handler.
func (s *sample) finish(outcome string, published, received time.Time) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done >= s.want {
		return // beyond the measured count (in flight when it was reached)
	}
	from := published
	if from.Before(s.start) {
		from = s.start
	}
	s.lat = append(s.lat, now.Sub(from))
	if !received.IsZero() {
		s.svc = append(s.svc, now.Sub(received))
	}
	s.outcome[outcome]++
	s.done++
	s.last = now
	if s.done == s.want {
		close(s.full)
	}
}

func (s *sample) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// result turns the sample into a Result; cpu is read now, so call it as
// soon as the configuration's events are done.
func (s *sample) result(name string) Result {
	cpu := cpuTime()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Result{Name: name, Events: s.done, Requested: s.want, Outcomes: map[string]int{}}
	for k, v := range s.outcome {
		r.Outcomes[k] = v
	}
	if s.done == 0 {
		return r
	}
	elapsed := s.last.Sub(s.start)
	r.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		r.EventsPerSec = float64(s.done) / elapsed.Seconds()
	}
	r.P50ms, r.P99ms = percentileMS(s.lat, 0.50), percentileMS(s.lat, 0.99)
	r.ServiceP50ms, r.ServiceP99ms = percentileMS(s.svc, 0.50), percentileMS(s.svc, 0.99)
	r.CPUusPerEvent = float64(cpu-s.cpu0) / float64(time.Microsecond) / float64(s.done)
	return r
}

// percentileMS is the nearest-rank percentile of ds, in milliseconds.
func percentileMS(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	i := int(float64(len(sorted))*p+0.999999) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Millisecond)
}

// stallTimeout is how long a configuration may go without finishing an
// event before the run is abandoned as stuck.
const stallTimeout = 2 * time.Minute

// wait blocks until the sample has its n events, ctx ends, or no event
// finished for stallTimeout.
func (s *sample) wait(ctx context.Context, n int) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastChange := -1, time.Now()
	for {
		select {
		case <-s.full:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("bench: %d of %d events done: %w", s.count(), n, ctx.Err())
		case now := <-tick.C:
			if c := s.count(); c != last {
				last, lastChange = c, now
			} else if now.Sub(lastChange) > stallTimeout {
				return fmt.Errorf("bench: stuck at %d of %d events for %s", c, n, stallTimeout)
			}
		}
	}
}
