package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// Rate-limit settings of the measurements: Intercom's documented default
// of 1,000 requests a minute is 167 per 10-second window.
const (
	sustainedLimit = 167
	// holLimit throttles connection "a" of the head-of-line measurement
	// hard: one request a second.
	holLimit = 10
	// holWait is the rate-limit wait budget the head-of-line measurement
	// compares with the adapter's default.
	holWait = time.Second
)

// RateLimitResult is one rate-limit measurement: a sustained run against
// one limited token (Windows > 0), or the head-of-line run (Free > 0).
type RateLimitResult struct {
	Name    string
	Seconds float64
	Events  int // events finished in the run

	// Sustained: whole windows measured, requests the emulator accepted
	// and answered 429 in them, and the accepted share of the limit.
	Limit, Windows, Accepted, Rejected int
	RateShare, Share429                float64

	// Head of line: the unthrottled connection's events/s alone (Free)
	// and while the other connection's events are throttled (Mixed); what
	// happened to the throttled connection's events meanwhile.
	MaxWait                     time.Duration
	Free, Mixed                 float64
	ThrottledDone, Throttled429 int
	ThrottledDeadLettered       int
	ThrottledRetries            int
}

func (e *Env) rateLimits(ctx context.Context, opt Options, progress func(string, ...any)) ([]RateLimitResult, error) {
	d := time.Duration(opt.RateLimitSeconds * float64(time.Second))
	var out []RateLimitResult
	for _, replicas := range []int{1, 2} {
		name := fmt.Sprintf("%d/10s, %d replica(s) × %d workers, %s latency", sustainedLimit, replicas, opt.Workers, opt.Latency)
		progress("rate limit: %s", name)
		r, err := e.sustained(ctx, name, replicas, opt, d)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	hol, err := e.headOfLine(ctx, opt, progress)
	if err != nil {
		return nil, err
	}
	return append(out, hol...), nil
}

// sustained runs the main mix against a token limited to 167 requests per
// 10 s for d, and counts accepted and refused requests in the windows that
// lie wholly inside the run.
func (e *Env) sustained(ctx context.Context, name string, replicas int, opt Options, d time.Duration) (RateLimitResult, error) {
	start := time.Now()
	res, _, log, err := e.runPipeline(ctx, spec{
		name: name, events: e.published, duration: d, workers: opt.Workers, replicas: replicas,
		ledger: true, crm: crmEmulator, latency: opt.Latency, conns: []connSpec{{name: "main", rateLimit: sustainedLimit}},
	})
	if err != nil {
		return RateLimitResult{}, err
	}
	end := start.Add(d)
	first, last := (start.Unix()+9)/10, end.Unix()/10 // whole windows [first, last)
	out := RateLimitResult{Name: name, Seconds: d.Seconds(), Events: res.Events, Limit: sustainedLimit, Windows: int(last - first)}
	for _, r := range log {
		if w := r.Time.Unix() / 10; w < first || w >= last {
			continue
		}
		if r.Status == 429 {
			out.Rejected++
		} else {
			out.Accepted++
		}
	}
	if out.Windows > 0 {
		out.RateShare = float64(out.Accepted) / float64(out.Windows*sustainedLimit)
	}
	if n := out.Accepted + out.Rejected; n > 0 {
		out.Share429 = float64(out.Rejected) / float64(n)
	}
	return out, nil
}

// The head-of-line stream: new leads alternating between a campaign on
// connection "a" (throttled) and one on connection "b" (not).
const (
	holStream, holSubject   = "BENCH_HOL", "bench.hol"
	freeStream, freeSubject = "BENCH_FREE", "bench.free"
	campA, campB            = "a_leads", "b_leads"
)

func holCatalog() *domain.Catalog {
	lead := catalog("").Campaigns[campLeads]
	a, b := lead, lead
	a.Connection, b.Connection = "a", "b"
	return &domain.Catalog{Campaigns: map[string]domain.Campaign{campA: a, campB: b}}
}

func holBody(i int) []byte {
	if i%2 == 0 {
		return render(2_000_000+i, 2_000_000+i, campA)
	}
	return render(2_000_000+i, 2_000_000+i, campB)
}

// headOfLine measures whether a throttled connection holds the workers the
// other connection needs. Connection "b" first runs alone; then the
// alternating stream runs with "a" limited to holLimit requests per 10 s,
// once with the adapter's default wait budget and once with holWait, until
// every event of "b" is done or the time runs out.
func (e *Env) headOfLine(ctx context.Context, opt Options, progress func(string, ...any)) ([]RateLimitResult, error) {
	nB := max(int(float64(opt.Workers)/opt.Latency.Seconds()/2*10), 100) // about 10 s of "b" alone
	limit := time.Duration(opt.RateLimitSeconds * float64(time.Second))
	if err := e.createStream(ctx, freeStream, freeSubject); err != nil {
		return nil, err
	}
	if err := e.publish(ctx, freeSubject, 0, nB, func(i int) []byte { return holBody(2*i + 1) }); err != nil {
		return nil, err
	}
	if err := e.createStream(ctx, holStream, holSubject); err != nil {
		return nil, err
	}
	if err := e.publish(ctx, holSubject, 0, 2*nB, holBody); err != nil {
		return nil, err
	}
	progress("rate limit: head of line, %d events of connection b alone", nB)
	free, _, _, err := e.runPipeline(ctx, spec{
		name: "b alone", stream: freeStream, subject: freeSubject, events: nB, workers: opt.Workers,
		ledger: true, crm: crmEmulator, latency: opt.Latency, catalog: holCatalog(),
		conns: []connSpec{{name: "a", rateLimit: holLimit}, {name: "b"}},
	})
	if err != nil {
		return nil, err
	}
	var out []RateLimitResult
	for _, v := range []struct {
		wait    time.Duration
		whatIf  bool
		setting string
	}{
		{0, false, "wait budget 15s (the adapter's default)"},
		{holWait, false, "wait budget 1s"},
		{holWait, true, "wait budget 1s; what if: MaxAckPending 20000, MaxDeliver unlimited, rate limits not counted as failed attempts"},
	} {
		wait := v.wait
		name := fmt.Sprintf("a limited to %d/10s, b free; %s", holLimit, v.setting)
		sp := spec{}
		if v.whatIf {
			sp.maxAckPending, sp.maxDeliver, sp.maxAttempts = 20_000, -1, 1_000_000
		}
		progress("rate limit: %s", name)
		var (
			mu                 sync.Mutex
			bDone, aDone, aDLQ int
			aRetries           int
			bLast              time.Time
			until              = make(chan struct{})
		)
		start := time.Now()
		res, _, log, err := e.runPipeline(ctx, spec{
			name: name, stream: holStream, subject: holSubject, events: 2 * nB, duration: limit, workers: opt.Workers,
			ledger: true, crm: crmEmulator, latency: opt.Latency, catalog: holCatalog(), maxRateLimitWait: wait,
			conns: []connSpec{{name: "a", rateLimit: holLimit}, {name: "b"}},
			until: until, maxAckPending: sp.maxAckPending, maxDeliver: sp.maxDeliver, maxAttempts: sp.maxAttempts,
			onVerdict: func(_ app.Message, v app.Verdict) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case v.Campaign == campB && !v.Retry:
					bDone++
					bLast = time.Now()
					if bDone == nB {
						close(until)
					}
				case v.Campaign == campA && v.Retry:
					aRetries++
				case v.Campaign == campA && v.Outcome == domain.OutcomeDeadLettered:
					aDLQ++
				case v.Campaign == campA:
					aDone++
				}
			},
		})
		if err != nil {
			return nil, err
		}
		mu.Lock()
		r := RateLimitResult{Name: name, Seconds: res.Seconds, Events: res.Events, MaxWait: wait, Free: free.EventsPerSec,
			ThrottledDone: aDone, ThrottledDeadLettered: aDLQ, ThrottledRetries: aRetries}
		if el := bLast.Sub(start).Seconds(); el > 0 {
			r.Mixed = float64(bDone) / el
		}
		mu.Unlock()
		for _, q := range log {
			if q.Workspace == "ws_a" && q.Status == 429 {
				r.Throttled429++
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// describe is one line about r for the report.
func (r RateLimitResult) describe() string {
	var b strings.Builder
	if r.Windows > 0 {
		fmt.Fprintf(&b, "%s: %d whole windows, %d requests accepted = %.1f%% of the limit, %d answered 429 = %.2f%% of requests; %d events in %.0fs",
			r.Name, r.Windows, r.Accepted, 100*r.RateShare, r.Rejected, 100*r.Share429, r.Events, r.Seconds)
		return b.String()
	}
	fmt.Fprintf(&b, "%s: b %.0f events/s (alone %.0f/s, %.0f%%); a meanwhile: %d done, %d dead-lettered, %d retries, %d answered 429",
		r.Name, r.Mixed, r.Free, 100*r.Mixed/max(r.Free, 1e-9), r.ThrottledDone, r.ThrottledDeadLettered, r.ThrottledRetries, r.Throttled429)
	return b.String()
}
