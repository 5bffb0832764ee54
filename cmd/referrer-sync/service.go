package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	wmmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/ports"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// options are the wiring choices that are not in the configuration file.
type options struct {
	logger *slog.Logger
	// observe, if set, sees every verdict (the demo prints them; tests
	// wait on them).
	observe func(app.Message, app.Verdict)
}

// instance is one running referrer-sync: everything wired, nothing else.
type instance struct {
	log      *slog.Logger
	file     *config.File
	consCfg  consumer.Config
	server   *embedded.Server
	nc       *nats.Conn // ledger, dead letters, provisioning
	consNC   *nats.Conn // the consumer's own; drained on close
	js       jetstream.JetStream
	ledger   *ledger.Ledger
	metrics  *metrics.Metrics
	svc      *app.Service
	consumer *consumer.Consumer
	httpSrv  *http.Server
	httpLn   net.Listener
	verified atomic.Bool
	stopping atomic.Bool
	storeTmp string
}

// start wires the service from a validated configuration. On error it
// releases whatever it had started.
func start(ctx context.Context, f *config.File, opt options) (in *instance, err error) {
	log := opt.logger
	in = &instance{log: log, file: f}
	defer func() {
		if err != nil {
			in.close()
			in = nil
		}
	}()

	url := f.NATS.URL
	if url == "" {
		dir := f.NATS.StoreDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "referrer-sync-js-"); err != nil {
				return in, err
			}
			in.storeTmp = dir
			log.Warn("nats.url is empty: running an embedded JetStream server with a temporary store; state is lost at exit (development only)", "store_dir", dir)
		}
		if in.server, err = embedded.Start(embedded.Config{StoreDir: dir}); err != nil {
			return in, err
		}
		url = in.server.URL()
	}
	connect := func(name string) (*nats.Conn, error) {
		return nats.Connect(url,
			nats.Name(name),
			nats.MaxReconnects(-1), // never give up: the broker's restart must not stop the service
			nats.ReconnectWait(time.Second),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("nats disconnected", "connection", name, "error", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected", "connection", name) }),
		)
	}
	if in.nc, err = connect("referrer-sync"); err != nil {
		return in, fmt.Errorf("connect to nats: %w", err)
	}
	if in.consNC, err = connect("referrer-sync-consumer"); err != nil {
		return in, fmt.Errorf("connect to nats: %w", err)
	}
	if in.js, err = jetstream.New(in.nc); err != nil {
		return in, err
	}

	in.consCfg = consumer.Config{
		Stream:            f.NATS.Stream,
		Subject:           f.NATS.Subject,
		Consumer:          f.NATS.Consumer,
		DeadLetterSubject: f.NATS.DeadLetterSubject,
		DeadLetterStream:  f.NATS.DeadLetterStream,
		Replicas:          f.NATS.Replicas,
		Workers:           f.NATS.Workers,
		AckWait:           time.Duration(f.NATS.AckWait),
		RetryDelay:        time.Duration(f.Retry.InitialDelay),
		MaxRetryDelay:     time.Duration(f.Retry.MaxDelay),
	}.WithDefaults()
	maxAttempts := f.Retry.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = 5
	}
	in.consCfg.MaxDeliver = maxAttempts + 5 // server backstop above the application's own cap
	if err = consumer.Provision(ctx, in.js, in.consCfg); err != nil {
		return in, err
	}
	lease := time.Duration(f.Ledger.Lease)
	if lease == 0 {
		lease = in.consCfg.AckWait * 2
	}
	if in.ledger, err = ledger.New(ctx, in.js, ledger.Config{
		Bucket: f.Ledger.Bucket, Replicas: f.Ledger.Replicas, TTL: time.Duration(f.Ledger.TTL), Lease: lease,
	}); err != nil {
		return in, err
	}

	in.metrics = metrics.New(version)
	crms, clients, err := in.connections(f)
	if err != nil {
		return in, err
	}
	if in.svc, err = app.New(app.Config{
		Catalog:     f.Catalog(),
		CRMs:        crms,
		Ledger:      in.ledger,
		People:      in.ledger,
		DeadLetters: consumer.NewDeadLetters(in.js, in.consCfg),
		Metrics:     in.metrics,
		Logger:      log.With("component", "app"),
		MaxAttempts: maxAttempts,
		SearchLags:  searchLags(f),
	}); err != nil {
		return in, err
	}
	if err = in.verify(ctx, f, clients); err != nil {
		return in, err
	}

	var h consumer.Handler = in.svc
	if opt.observe != nil {
		h = observed{h: in.svc, fn: opt.observe}
	}
	wm := wmmetrics.NewPrometheusMetricsBuilder(in.metrics.Registry, "referrer_sync", "watermill")
	if in.consumer, err = consumer.New(in.consNC, in.consCfg, h, log.With("component", "consumer"),
		func(r *message.Router) { wm.AddPrometheusRouterMetrics(r) }); err != nil {
		return in, err
	}

	in.metrics.Gauges(func() float64 { return float64(in.consumer.Busy()) }, func() bool { return in.ready() == nil })

	listen := f.HTTP.Listen
	if listen == "" {
		listen = "127.0.0.1:9464"
	}
	if in.httpLn, err = net.Listen("tcp", listen); err != nil {
		return in, fmt.Errorf("http.listen: %w", err)
	}
	in.httpSrv = &http.Server{Handler: in.metrics.Mux(in.ready), ReadHeaderTimeout: 5 * time.Second}
	return in, nil
}

func searchLags(f *config.File) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, c := range f.Connections {
		out[name] = time.Duration(c.SearchLag)
	}
	return out
}

// connections builds one CRM client per configured connection.
func (in *instance) connections(f *config.File) (map[string]ports.CRM, map[string]*intercom.Client, error) {
	crms := map[string]ports.CRM{}
	clients := map[string]*intercom.Client{}
	var errs []error
	for name, c := range f.Connections {
		token, err := c.Token()
		if err != nil {
			errs = append(errs, fmt.Errorf("connections.%s.access_token_env: %w", name, err))
			continue
		}
		cl, err := intercom.New(intercom.Config{
			Connection:      name,
			Region:          c.Region,
			BaseURL:         c.BaseURL,
			Token:           token,
			APIVersion:      c.APIVersion,
			Timeout:         time.Duration(c.Timeout),
			MarkerAttribute: c.Marker(),
			Observe:         in.metrics.CRMRequest(name),
			RateLimit:       in.metrics.CRMRateLimit(name),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("connections.%s: %w", name, err))
			continue
		}
		crms[name], clients[name] = cl, cl
	}
	return crms, clients, errors.Join(errs...)
}

// verify checks each connection's token with the CRM and warns about custom
// attributes the campaigns map but the workspace lacks (those creates would
// be refused and dead-lettered).
func (in *instance) verify(ctx context.Context, f *config.File, clients map[string]*intercom.Client) error {
	var errs []error
	for name, cl := range clients {
		vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := cl.Me(vctx)
		if err == nil {
			var attrs []intercom.Attribute
			attrs, err = cl.Attributes(vctx)
			if err == nil {
				in.warnMissingAttributes(f, name, attrs)
				err = in.ensureMarker(vctx, name, f.Connections[name], cl, attrs)
			}
		}
		cancel()
		if ports.KindOf(err) == ports.Unauthorized {
			errs = append(errs, fmt.Errorf("connections.%s: the CRM refused the access token: %w", name, err))
		} else if err != nil {
			errs = append(errs, fmt.Errorf("connections.%s: cannot verify the access token: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	in.verified.Store(true)
	return nil
}

// ensureMarker creates the marker attribute when the workspace lacks it.
// Without it, creates would be refused (the CRM rejects unknown attributes)
// and lost creates could not be found again.
func (in *instance) ensureMarker(ctx context.Context, name string, c config.Connection, cl *intercom.Client, attrs []intercom.Attribute) error {
	for _, a := range attrs {
		if a.Name == c.Marker() {
			return nil
		}
	}
	err := cl.CreateAttribute(ctx, c.Marker(), "string", "Set by referrer-sync: the id of the referrer.joined event that created this contact.")
	if ports.KindOf(err) == ports.Unauthorized {
		return fmt.Errorf("the access token may not create data attributes; create the text attribute %q on contacts in Intercom (Settings → Data → People) or grant the token that permission: %w", c.Marker(), err)
	}
	if err != nil {
		return fmt.Errorf("create marker attribute %q: %w", c.Marker(), err)
	}
	in.log.Info("created the marker attribute in the CRM workspace", "connection", name, "attribute", c.Marker())
	return nil
}

func (in *instance) warnMissingAttributes(f *config.File, conn string, attrs []intercom.Attribute) {
	have := make([]string, 0, len(attrs))
	for _, a := range attrs {
		have = append(have, a.Name)
	}
	check := func(path string, c *config.Campaign) {
		if c == nil || c.Connection != conn {
			return
		}
		for i, fl := range c.Referrers.Fields {
			name, ok := strings.CutPrefix(fl.To, "custom_attributes.")
			if ok && !slices.Contains(have, name) {
				in.log.Warn("a mapped custom attribute does not exist in the CRM workspace; creates will be refused and dead-lettered until it is created",
					"path", fmt.Sprintf("%s.referrers.fields[%d]", path, i), "attribute", name, "connection", conn)
			}
		}
	}
	for id, c := range f.Campaigns {
		check("campaigns."+id, &c)
	}
	check("default_campaign", f.DefaultCampaign)
}

func (in *instance) ready() error {
	var errs []error
	if in.stopping.Load() {
		errs = append(errs, errors.New("draining"))
	}
	if in.nc == nil || !in.nc.IsConnected() || !in.consNC.IsConnected() {
		errs = append(errs, errors.New("nats not connected"))
	}
	select {
	case <-in.consumer.Running():
	default:
		errs = append(errs, errors.New("consumer not bound"))
	}
	if !in.verified.Load() {
		errs = append(errs, errors.New("crm tokens not verified"))
	}
	return errors.Join(errs...)
}

// run serves until ctx is cancelled, then shuts down in order: stop taking
// messages and drain in-flight ones, stop HTTP, close connections.
func (in *instance) run(ctx context.Context) error {
	httpErr := make(chan error, 1)
	go func() { httpErr <- in.httpSrv.Serve(in.httpLn) }()
	in.log.Info("referrer-sync running", "version", version, "metrics", "http://"+in.httpLn.Addr().String()+"/metrics",
		"stream", in.consCfg.Stream, "subject", in.consCfg.Subject, "consumer", in.consCfg.Consumer, "workers", in.consCfg.Workers)

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go in.pollConsumer(cctx, 5*time.Second)
	consErr := make(chan error, 1)
	go func() { consErr <- in.consumer.Run(cctx) }()
	var err error
	select {
	case <-ctx.Done():
		in.stopping.Store(true)
		err = <-consErr
	case err = <-consErr:
		in.stopping.Store(true)
	case err = <-httpErr:
		in.stopping.Store(true)
		cancel()
		err = errors.Join(fmt.Errorf("http server: %w", err), <-consErr)
	}
	in.close()
	in.log.Info("referrer-sync stopped")
	return err
}

// pollConsumer keeps the consumer backlog gauges current.
func (in *instance) pollConsumer(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, every)
		if cons, err := in.js.Consumer(qctx, in.consCfg.Stream, in.consCfg.Consumer); err == nil {
			if info, err := cons.Info(qctx); err == nil {
				in.metrics.ConsumerState(info.NumPending, uint64(info.NumAckPending))
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// close releases everything start acquired, in reverse order.
func (in *instance) close() {
	if in.httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = in.httpSrv.Shutdown(sctx)
		cancel()
	} else if in.httpLn != nil {
		_ = in.httpLn.Close()
	}
	for _, nc := range []*nats.Conn{in.consNC, in.nc} {
		if nc != nil && !nc.IsClosed() {
			nc.Close()
		}
	}
	if in.server != nil {
		in.server.Shutdown()
	}
	if in.storeTmp != "" {
		_ = os.RemoveAll(in.storeTmp)
	}
}

// addr is the address the HTTP listener is bound to.
func (in *instance) addr() string { return in.httpLn.Addr().String() }

type observed struct {
	h  consumer.Handler
	fn func(app.Message, app.Verdict)
}

func (o observed) Handle(ctx context.Context, m app.Message) app.Verdict {
	v := o.h.Handle(ctx, m)
	o.fn(m, v)
	return v
}
