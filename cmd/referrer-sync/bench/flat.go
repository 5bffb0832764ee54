package bench

import (
	"context"
	"runtime/metrics"
	"sync"
)

// Flatness compares the process's RSS after FlatFrom and FlatTo events of
// one long run of configuration (2): a leak per event would show as growth
// in proportion to the events.
type Flatness struct {
	Config                 string
	From, To               int
	RSSFromMB, RSSToMB     float64
	HeapFromMB, HeapToMB   float64 // Go heap objects, live and not yet swept
	Ratio                  float64 // RSSToMB / RSSFromMB
	Flat                   bool    // within 20 %
	EventsPerSec, Duration float64
	// Series is RSS (MiB) after every tenth of the run, to tell a trend
	// from a passing bump.
	Series []float64
}

// flatness runs configuration (2) over the first FlatTo events of the
// stream and reads RSS as the FlatFrom-th and the FlatTo-th finish.
func (e *Env) flatness(ctx context.Context, opt Options) (*Flatness, error) {
	if err := e.Publish(ctx, opt.FlatTo); err != nil {
		return nil, err
	}
	resetPeak()
	f := &Flatness{Config: NamePipeline, From: opt.FlatFrom, To: opt.FlatTo}
	var mu sync.Mutex
	read := func(rss, heap *float64) {
		mu.Lock()
		defer mu.Unlock()
		*rss = float64(procStatus("VmRSS")) / (1 << 20)
		*heap = float64(heapObjects()) / (1 << 20)
	}
	step := max(opt.FlatTo/10, 1)
	sp := spec{name: "flatness", events: opt.FlatTo, workers: opt.Workers, onDone: func(n int) {
		switch n {
		case opt.FlatFrom:
			read(&f.RSSFromMB, &f.HeapFromMB)
		case opt.FlatTo:
			read(&f.RSSToMB, &f.HeapToMB)
		}
		if n%step == 0 {
			rss := float64(procStatus("VmRSS")) / (1 << 20)
			mu.Lock()
			f.Series = append(f.Series, rss)
			mu.Unlock()
		}
	}}
	r, _, _, err := e.runPipeline(ctx, sp)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if f.RSSFromMB > 0 {
		f.Ratio = f.RSSToMB / f.RSSFromMB
	}
	f.Flat = f.Ratio > 0 && f.Ratio <= 1.2
	f.EventsPerSec, f.Duration = r.EventsPerSec, r.Seconds
	return f, nil
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
