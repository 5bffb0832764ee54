package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	wmmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// crmKind selects the CRM behind the pipeline.
type crmKind int

const (
	crmNop      crmKind = iota // in-process, answers at once: "nothing found", "created"
	crmEmulator                // the real intercom adapter against the emulator over loopback HTTP
)

// connSpec is one CRM connection (one Intercom workspace and token).
type connSpec struct {
	name      string
	rateLimit int // the emulator's requests per 10 s for the token; 0 = unlimited
}

// spec describes one run of the full pipeline: the consumer adapter
// (Watermill over the durable pull consumer), app.Service and the chosen
// ledger and CRM, wired as cmd/referrer-sync wires them, with the
// production defaults (JSON logs at info, Prometheus and Watermill metrics,
// dead letters on their stream).
type spec struct {
	name            string
	stream, subject string // default: the main stream
	events          int    // the run ends when this many events reached their outcome
	// duration, if set, ends the run after this long instead; events then
	// only caps what is counted.
	duration time.Duration
	workers  int // per replica; default 8, the service's default
	ledger   bool
	crm      crmKind
	conns    []connSpec // default: one unlimited connection "main"
	latency  time.Duration
	replicas int // service instances sharing the durable consumer; default 1
	// maxRateLimitWait is intercom.Config.MaxRateLimitWait; 0 keeps the
	// adapter's default.
	maxRateLimitWait time.Duration
	catalog          *domain.Catalog // default: catalog("main")
	maxAttempts      int             // app.Config.MaxAttempts; 0 keeps the default
	// maxAckPending and maxDeliver, if set, override what
	// consumer.Provision gives the durable: what-if settings for the
	// head-of-line measurement.
	maxAckPending, maxDeliver int
	// onVerdict, if set, sees every verdict, from every worker.
	onVerdict func(app.Message, app.Verdict)
	// until, if set, ends the run when closed.
	until <-chan struct{}
	// onDone, if set, is called with the number of events finished so
	// far, each time one finishes.
	onDone func(n int)
}

func (sp *spec) setDefaults() {
	if sp.stream == "" {
		sp.stream, sp.subject = mainStream, mainSubject
	}
	if sp.workers == 0 {
		sp.workers = 8
	}
	if len(sp.conns) == 0 {
		sp.conns = []connSpec{{name: "main"}}
	}
	if sp.replicas == 0 {
		sp.replicas = 1
	}
	if sp.catalog == nil {
		sp.catalog = catalog(sp.conns[0].name)
	}
}

// tokenFor is the emulator token of a connection.
func tokenFor(conn string) string { return "bench-token-" + conn }

// runStats counts what a run did besides finishing events.
type runStats struct {
	requests sync.Map // "conn op status" → *atomic.Int64
	retries  sync.Map // reason → *atomic.Int64
	handled  atomic.Int64
	kvReads  atomic.Int64 // ledger reads asked by the service
	kvWrites atomic.Int64 // ledger compare-and-set writes asked by the service
}

func bump(m *sync.Map, key string) {
	v, _ := m.LoadOrStore(key, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func snapshot(m *sync.Map) map[string]int {
	out := map[string]int{}
	m.Range(func(k, v any) bool {
		out[k.(string)] = int(v.(*atomic.Int64).Load())
		return true
	})
	return out
}

// totalRequests is the number of HTTP requests made to the CRM.
func (st *runStats) totalRequests() int {
	n := 0
	for _, v := range snapshot(&st.requests) {
		n += v
	}
	return n
}

// runPipeline runs sp and returns its result and the emulator's request
// log (nil without the emulator; the log keeps the latest 100,000).
func (e *Env) runPipeline(ctx context.Context, sp spec) (Result, *runStats, []emulator.Request, error) {
	sp.setDefaults()
	var em *emu
	if sp.crm == crmEmulator {
		tokens := map[string]emulator.Workspace{}
		for _, c := range sp.conns {
			tokens[tokenFor(c.name)] = emulator.Workspace{ID: "ws_" + c.name, RateLimit: c.rateLimit,
				Attributes: []string{attrLink, attrSource, attrCompany, markerAttr}}
		}
		var err error
		if em, err = startEmulator(emulator.Config{Tokens: tokens, Latency: sp.latency, Seed: 1}); err != nil {
			return Result{}, nil, nil, err
		}
		defer em.close()
	}
	durable := e.name("pipeline")
	ccfg := consumer.Config{
		Stream: sp.stream, Subject: sp.subject, Consumer: durable,
		DeadLetterSubject: "dlq." + sp.subject, DeadLetterStream: sp.stream + "_DLQ",
		Workers: sp.workers, AckWait: 30 * time.Second,
	}.WithDefaults()
	if err := consumer.Provision(ctx, e.js, ccfg, nil); err != nil {
		return Result{}, nil, nil, err
	}
	defer e.deleteConsumer(sp.stream, durable)
	if sp.maxAckPending != 0 || sp.maxDeliver != 0 {
		if err := e.override(ctx, sp.stream, durable, sp.maxAckPending, sp.maxDeliver); err != nil {
			return Result{}, nil, nil, err
		}
	}
	bucket := ""
	if sp.ledger {
		bucket = e.name("bench_ledger")
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = e.js.DeleteKeyValue(dctx, bucket)
		}()
	}

	want := sp.events
	s := newSample(want)
	st := &runStats{}
	var reps []*replica
	defer func() {
		for _, r := range reps {
			r.close()
		}
	}()
	for range sp.replicas {
		r, err := e.startReplica(ctx, sp, ccfg, bucket, em, s, st)
		if err != nil {
			return Result{}, nil, nil, err
		}
		reps = append(reps, r)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, len(reps))
	s.begin()
	for _, r := range reps {
		go func() { errc <- r.cons.Run(runCtx) }()
	}
	var err error
	if sp.duration > 0 {
		select {
		case <-time.After(sp.duration):
		case <-s.full:
		case <-sp.until:
		case <-ctx.Done():
			err = ctx.Err()
		}
	} else {
		err = s.wait(ctx, want)
	}
	res := s.result(sp.name)
	// Stopping a consumer whose workers have not all started leaves its
	// router waiting out its close timeout (25 s) for handlers that never
	// ran; a short run at 128 workers can finish first.
	for _, r := range reps {
		select {
		case <-r.cons.Running():
		case <-time.After(30 * time.Second):
		}
	}
	stop()
	for range reps {
		if rerr := <-errc; rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return res, st, nil, err
	}
	res.Workers = sp.workers
	if n := st.handled.Load(); n > 0 && sp.crm == crmEmulator {
		res.RequestsPerEvent = float64(st.totalRequests()) / float64(n)
	}
	if n := st.handled.Load(); n > 0 {
		res.KVReadsPerEvent = float64(st.kvReads.Load()) / float64(n)
		res.KVWritesPerEvent = float64(st.kvWrites.Load()) / float64(n)
	}
	res.Retries = snapshot(&st.retries)
	var log []emulator.Request
	if em != nil {
		log = em.Requests()
	}
	return res, st, log, nil
}

// override changes a provisioned durable's MaxAckPending and MaxDeliver
// (zero leaves one as it is).
func (e *Env) override(ctx context.Context, stream, durable string, maxAckPending, maxDeliver int) error {
	cons, err := e.js.Consumer(ctx, stream, durable)
	if err != nil {
		return err
	}
	cfg := cons.CachedInfo().Config
	if maxAckPending != 0 {
		cfg.MaxAckPending = maxAckPending
	}
	if maxDeliver != 0 {
		cfg.MaxDeliver = maxDeliver
	}
	_, err = e.js.UpdateConsumer(ctx, stream, cfg)
	return err
}

// replica is one service instance: its own connections, clients, service
// and consumer, sharing the durable consumer, the ledger bucket and the
// CRM with the other replicas of the run.
type replica struct {
	nc, consNC *nats.Conn
	cons       *consumer.Consumer
}

func (r *replica) close() {
	for _, nc := range []*nats.Conn{r.consNC, r.nc} {
		if nc != nil {
			nc.Close()
		}
	}
}

// serviceLogger is what `referrer-sync run` logs with by default (JSON at
// info), writing nowhere: formatting the per-event log line is part of the
// pipeline's cost.
func serviceLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func (e *Env) startReplica(ctx context.Context, sp spec, ccfg consumer.Config, bucket string, em *emu, s *sample, st *runStats) (*replica, error) {
	r := &replica{}
	var err error
	if r.nc, err = e.connect("bench-service"); err != nil {
		return nil, err
	}
	if r.consNC, err = e.connect("bench-service-consumer"); err != nil {
		r.close()
		return nil, err
	}
	js, err := jetstream.New(r.nc)
	if err != nil {
		r.close()
		return nil, err
	}
	var led ports.Ledger = nopLedger{}
	if bucket != "" {
		l, err := ledger.New(ctx, js, ledger.Config{Bucket: bucket})
		if err != nil {
			r.close()
			return nil, err
		}
		led = &countingLedger{Ledger: l, st: st}
	}
	m := metrics.New("bench")
	crms := map[string]ports.CRM{}
	for _, c := range sp.conns {
		if em == nil {
			crms[c.name] = &nopCRM{}
			continue
		}
		observe := m.CRMRequest(c.name)
		cl, err := intercom.New(intercom.Config{
			Connection: c.name, BaseURL: em.url, Token: tokenFor(c.name), MarkerAttribute: markerAttr,
			MaxRateLimitWait: sp.maxRateLimitWait,
			Observe: func(op string, status int, d time.Duration) {
				observe(op, status, d)
				bump(&st.requests, c.name+" "+op+" "+strconv.Itoa(status))
			},
			RateLimit: m.CRMRateLimit(c.name),
		})
		if err != nil {
			r.close()
			return nil, err
		}
		crms[c.name] = cl
	}
	log := serviceLogger()
	svc, err := app.New(app.Config{
		Catalog: sp.catalog, CRMs: crms, Ledger: led,
		DeadLetters: consumer.NewDeadLetters(js, ccfg), Metrics: m,
		Logger: log.With("component", "app"), MaxAttempts: sp.maxAttempts,
	})
	if err != nil {
		r.close()
		return nil, err
	}
	wm := wmmetrics.NewPrometheusMetricsBuilder(m.Registry, "referrer_sync", "watermill")
	h := &counting{svc: svc, s: s, st: st, on: sp.onVerdict, onDone: sp.onDone}
	if r.cons, err = consumer.New(r.consNC, ccfg, h, log.With("component", "consumer"),
		func(rt *message.Router) { wm.AddPrometheusRouterMetrics(rt) }); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// counting is the consumer's handler: the service, plus the bookkeeping of
// the run. An event is done when its verdict is final; the consumer's
// double ack follows right after, inside the same worker.
type counting struct {
	svc    *app.Service
	s      *sample
	st     *runStats
	on     func(app.Message, app.Verdict)
	onDone func(n int)
}

func (h *counting) Handle(ctx context.Context, m app.Message) app.Verdict {
	v := h.svc.Handle(ctx, m)
	if h.on != nil {
		h.on(m, v)
	}
	if v.Retry {
		bump(&h.st.retries, v.Reason)
		return v
	}
	n := h.st.handled.Add(1)
	h.s.finish(string(v.Outcome), m.Published, m.Received)
	if h.onDone != nil {
		h.onDone(int(n))
	}
	return v
}

// nopCRM is the in-process CRM of configurations (2) and (3): it finds
// nothing, creates at once and accepts every update, so what is measured is
// the pipeline itself.
type nopCRM struct{ n atomic.Int64 }

func (c *nopCRM) Find(context.Context, domain.Identity) ([]domain.Match, error) { return nil, nil }

func (c *nopCRM) Create(context.Context, domain.Contact) (ports.Created, error) {
	return ports.Created{ID: fmt.Sprintf("%024x", c.n.Add(1))}, nil
}

func (c *nopCRM) Update(context.Context, string, domain.Contact) error { return nil }

// nopLedger is "ledger off": nothing is remembered and every write
// succeeds, so configuration (2) measures decode, decide and map alone.
type nopLedger struct{}

func (nopLedger) Person(_ context.Context, conn, email string) (ports.Person, error) {
	return ports.Person{Connection: conn, Email: email}, nil
}
func (nopLedger) Put(context.Context, *ports.Person) error { return nil }

// countingLedger counts the KV operations the service asks of the ledger.
type countingLedger struct {
	ports.Ledger
	st *runStats
}

func (c *countingLedger) Person(ctx context.Context, conn, email string) (ports.Person, error) {
	c.st.kvReads.Add(1)
	return c.Ledger.Person(ctx, conn, email)
}

func (c *countingLedger) Put(ctx context.Context, p *ports.Person) error {
	c.st.kvWrites.Add(1)
	return c.Ledger.Put(ctx, p)
}
