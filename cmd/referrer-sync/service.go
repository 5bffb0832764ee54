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
	"github.com/referrer-sync/referrer-sync/adapters/hubspot"
	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
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
	// configPath, if set, is the file the configuration came from: run
	// reloads its campaign settings when its content changes and on each
	// value from reload (SIGHUP). configHash is the SHA-256 (hex) of the
	// bytes the configuration was parsed from.
	configPath string
	configHash string
	reload     <-chan os.Signal
	// dryRun consumes with a durable of its own and only reports what it
	// would do (see dryrun.go).
	dryRun bool
}

// instance is one running referrer-sync: everything wired, nothing else.
type instance struct {
	log      *slog.Logger
	file     *config.File
	opt      options
	consCfg  consumer.Config
	server   *embedded.Server
	nc       *nats.Conn // ledger, dead letters, provisioning
	consNC   *nats.Conn // the consumer's own; drained on close
	js       jetstream.JetStream
	ledger   *ledger.Ledger
	metrics  *metrics.Metrics
	svc      *app.Service
	clients  map[string]*intercom.Client // type intercom
	hubspots map[string]*hubspot.Client  // type hubspot
	consumer *consumer.Consumer
	httpSrv  *http.Server
	httpLn   net.Listener
	httpErr  chan error // the HTTP server's end; served from the start of start-up
	verified atomic.Bool
	stopping atomic.Bool
	// wired is set once start has connected and built everything; until
	// then /readyz reports phase, what start-up is doing or waiting for.
	wired    atomic.Bool
	phase    atomic.Pointer[string]
	storeTmp string
}

// start wires the service from a validated configuration. It serves
// /healthz, /readyz and /metrics from the beginning, and waits out
// transient trouble (NATS unreachable, provisioning timing out, the CRM
// answering 429 or 5xx) until ctx ends; see startup.go. On error it
// releases whatever it had started; an error for which interrupted is true
// means ctx ended while it waited.
func start(ctx context.Context, f *config.File, opt options) (in *instance, err error) {
	log := opt.logger
	in = &instance{log: log, file: f, opt: opt}
	defer func() {
		if err != nil {
			in.close()
			in = nil
		}
	}()
	in.setPhase("starting")

	in.metrics = metrics.New(version, metrics.CampaignLabels(f.Metrics.CampaignLabelsEnabled()))
	if !opt.dryRun {
		in.metrics.Init(metrics.Known{Catalog: f.Catalog()}) // every series alerts read exists at 0
	}
	if opt.configHash != "" {
		in.metrics.ConfigLoaded(opt.configHash)
	}
	ready := in.ready // bound now: on error the deferred clean-up sets in to nil
	in.metrics.Gauges(in.inFlight, func() bool { return ready() == nil })
	listen := f.HTTP.Listen
	if listen == "" {
		listen = "127.0.0.1:9464"
	}
	var lc net.ListenConfig
	if in.httpLn, err = lc.Listen(ctx, "tcp", listen); err != nil {
		return in, fmt.Errorf("http.listen: %w", err)
	}
	srv, ln, served := &http.Server{Handler: in.metrics.Mux(ready), ReadHeaderTimeout: 5 * time.Second}, in.httpLn, make(chan error, 1)
	in.httpSrv, in.httpErr = srv, served
	go func() { served <- srv.Serve(ln) }()

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
	if err = in.startStep(ctx, "connect to nats", natsTransient, func(context.Context) error {
		nc, err := connect("referrer-sync")
		if err != nil {
			return fmt.Errorf("connect to nats: %w", err)
		}
		consNC, err := connect("referrer-sync-consumer")
		if err != nil {
			nc.Close()
			return fmt.Errorf("connect to nats: %w", err)
		}
		in.nc, in.consNC = nc, consNC
		return nil
	}); err != nil {
		return in, err
	}
	if in.js, err = jetstream.New(in.nc); err != nil {
		return in, err
	}

	in.consCfg = consumer.Config{
		Stream:             f.NATS.Stream,
		Subject:            f.NATS.Subject,
		Consumer:           f.NATS.Consumer,
		DeadLetterSubject:  f.NATS.DeadLetterSubject,
		DeadLetterStream:   f.NATS.DeadLetterStream,
		Replicas:           f.NATS.Replicas,
		Workers:            f.NATS.Workers,
		PullBatch:          f.NATS.PullBatch,
		AckWait:            time.Duration(f.NATS.AckWait),
		MaxDeliver:         f.NATS.MaxDeliver,
		MaxAckPending:      f.NATS.MaxAckPending,
		StreamMaxAge:       time.Duration(f.NATS.StreamMaxAge),
		StreamMaxBytes:     f.NATS.StreamMaxBytes,
		DeadLetterMaxAge:   time.Duration(f.NATS.DeadLetterMaxAge),
		DeadLetterMaxBytes: f.NATS.DeadLetterMaxBytes,
		RetryDelay:         time.Duration(f.Retry.InitialDelay),
		MaxRetryDelay:      time.Duration(f.Retry.MaxDelay),
		DrainTimeout:       time.Duration(f.NATS.DrainTimeout),
	}.WithDefaults()
	maxAttempts := f.Retry.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = 5
	}
	ledgerCfg := ledger.Config{Bucket: f.Ledger.Bucket, Replicas: f.Ledger.Replicas, TTL: time.Duration(f.Ledger.TTL),
		Logger: log.With("component", "ledger")}
	var (
		led ports.Ledger
		dlq ports.DeadLetters
	)
	if opt.dryRun {
		in.consCfg.Consumer += dryRunSuffix
		if err = in.startStep(ctx, "provision the dry run's consumer", natsTransient, func(ctx context.Context) error {
			return provisionDryRun(ctx, in.js, in.consCfg)
		}); err != nil {
			return in, err
		}
		var ro *ledger.ReadOnly
		if err = in.startStep(ctx, "open the ledger", natsTransient, func(ctx context.Context) (err error) {
			ro, err = ledger.OpenReadOnly(ctx, in.js, f.Ledger.Bucket)
			return err
		}); err != nil {
			return in, err
		}
		led, dlq = ro, refuseDeadLetters{}
	} else {
		if err = in.startStep(ctx, "provision streams and consumer", natsTransient, func(ctx context.Context) error {
			return consumer.Provision(ctx, in.js, in.consCfg, log.With("component", "provision"))
		}); err != nil {
			return in, err
		}
		if err = in.startStep(ctx, "provision the ledger", natsTransient, func(ctx context.Context) (err error) {
			in.ledger, err = ledger.New(ctx, in.js, ledgerCfg)
			return err
		}); err != nil {
			return in, err
		}
		led, dlq = in.ledger, consumer.NewDeadLetters(in.js, in.consCfg)
	}
	// On a fresh cluster the durable's own leader may still be elected
	// after its creation was acknowledged; its info requests go unanswered
	// until then. Wait here, where waiting is retried, rather than in the
	// consumer's start, where it is not.
	if err = in.startStep(ctx, "look up the durable consumer", natsTransient, func(ctx context.Context) error {
		_, err := in.js.Consumer(ctx, in.consCfg.Stream, in.consCfg.Consumer)
		return err
	}); err != nil {
		return in, err
	}

	crms, err := in.connections(f)
	if err != nil {
		return in, err
	}
	if opt.dryRun {
		for name, crm := range crms {
			crms[name] = readOnlyCRM{crm}
		}
	}
	if in.svc, err = app.New(app.Config{
		Catalog:      f.Catalog(),
		CRMs:         crms,
		Ledger:       led,
		DeadLetters:  dlq,
		Metrics:      in.metrics,
		Logger:       log.With("component", "app"),
		MaxAttempts:  maxAttempts,
		SearchLags:   searchLags(f),
		CommitGraces: commitGraces(f),
		Lease:        f.Ledger.LeaseOrDefault(time.Duration(f.NATS.AckWait)),
		Remember:     time.Duration(f.Ledger.TTL),
	}); err != nil {
		return in, err
	}
	if err = in.verify(ctx, f); err != nil {
		return in, err
	}

	var h consumer.Handler = in.svc
	if opt.dryRun {
		h = dryRunHandler{svc: in.svc, metrics: in.metrics, log: log.With("component", "dry_run")}
		log.Warn("dry run: nothing is written to the CRM, the ledger or the dead-letter stream; outcomes are logged and counted in referrer_sync_dry_run_events_total",
			"consumer", in.consCfg.Consumer)
	}
	if opt.observe != nil {
		h = observed{h: h, fn: opt.observe}
	}
	wm := wmmetrics.NewPrometheusMetricsBuilder(in.metrics.Registry, "referrer_sync", "watermill")
	if in.consumer, err = consumer.New(in.consNC, in.consCfg, h, log.With("component", "consumer"),
		func(r *message.Router) { wm.AddPrometheusRouterMetrics(r) }); err != nil {
		return in, err
	}

	in.wired.Store(true)
	return in, nil
}

// inFlight is the in-flight gauge: messages being handled now.
func (in *instance) inFlight() float64 {
	if !in.wired.Load() {
		return 0
	}
	return float64(in.consumer.Busy())
}

func searchLags(f *config.File) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, c := range f.Connections {
		out[name] = c.SearchLagOrDefault()
	}
	return out
}

func commitGraces(f *config.File) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, c := range f.Connections {
		out[name] = time.Duration(c.CommitGrace)
	}
	return out
}

// connections builds one CRM client per configured connection, of the
// adapter its type names; in.clients and in.hubspots keep them for
// start-up checks and reloads.
func (in *instance) connections(f *config.File) (map[string]ports.CRM, error) {
	crms := map[string]ports.CRM{}
	clients := map[string]*intercom.Client{}
	hubspots := map[string]*hubspot.Client{}
	in.clients, in.hubspots = clients, hubspots
	var errs []error
	for name, c := range f.Connections {
		token, err := c.Token()
		if err != nil {
			errs = append(errs, fmt.Errorf("connections.%s.access_token_env: %w", name, err))
			continue
		}
		if c.Type == config.TypeHubSpot {
			cl, err := hubspot.New(hubspot.Config{
				Connection:         name,
				BaseURL:            c.BaseURL,
				Token:              token,
				APIVersion:         c.APIVersion,
				LeadStage:          c.LeadStage,
				UserStage:          c.UserStage,
				MarkerProperty:     c.Marker(),
				ExternalIDProperty: c.ExternalIDProperty,
				Timeout:            time.Duration(c.Timeout),
				Observe:            in.metrics.CRMRequest(name),
				RateLimit:          in.metrics.CRMRateLimit(name),
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("connections.%s: %w", name, err))
				continue
			}
			crms[name], hubspots[name] = cl, cl
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
	return crms, errors.Join(errs...)
}

// crmNames are the connections this process has a CRM client for, sorted.
func (in *instance) crmNames() []string {
	names := make([]string, 0, len(in.clients)+len(in.hubspots))
	for name := range in.clients {
		names = append(names, name)
	}
	for name := range in.hubspots {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// verify checks each connection's token with the CRM and its account: for
// Intercom it warns about custom attributes the campaigns map but the
// workspace lacks (those creates would be refused and dead-lettered); for
// HubSpot a mapped property the account lacks stops start-up, every one
// listed. A dry run only reads: it reports a missing marker instead of
// creating it, and property problems instead of failing.
func (in *instance) verify(ctx context.Context, f *config.File) error {
	var errs []error
	for _, name := range in.crmNames() {
		check := func(ctx context.Context) error { return in.verifyOne(ctx, f, name, in.clients[name]) }
		if cl, ok := in.hubspots[name]; ok {
			check = func(ctx context.Context) error { return in.verifyHubSpot(ctx, f, name, cl) }
		}
		err := in.startStep(ctx, "verify the access token of connections."+name, crmTransient, check)
		if interrupted(err) {
			return err
		}
		var pe *hubspot.PropertyError
		if errors.As(err, &pe) {
			errs = append(errs, fmt.Errorf("connections.%s: the HubSpot account's contact properties do not fit the campaigns: %w", name, pe))
		} else if ports.KindOf(err) == ports.Unauthorized {
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

// verifyOne checks one connection's token and workspace once.
func (in *instance) verifyOne(ctx context.Context, f *config.File, name string, cl *intercom.Client) error {
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	{
		_, err := cl.Me(vctx)
		if err == nil {
			var attrs []intercom.Attribute
			attrs, err = cl.Attributes(vctx)
			switch {
			case err != nil:
			case in.opt.dryRun:
				in.warnMissingAttributes(f, name, attrs)
				if !slices.ContainsFunc(attrs, func(a intercom.Attribute) bool { return a.Name == f.Connections[name].Marker() }) {
					in.log.Info("dry run: the marker attribute does not exist in the CRM workspace; the service creates it at start-up",
						"connection", name, "attribute", f.Connections[name].Marker())
				}
			default:
				in.warnMissingAttributes(f, name, attrs)
				err = in.ensureMarker(vctx, name, f.Connections[name], cl, attrs)
			}
		}
		return err
	}
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

// verifyHubSpot checks one HubSpot connection once: the token (by listing
// the contact properties), the marker property (created when missing, so a
// lost create can be found again), and every property the campaigns map.
func (in *instance) verifyHubSpot(ctx context.Context, f *config.File, name string, cl *hubspot.Client) error {
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	marker := f.Connections[name].Marker()
	if !in.opt.dryRun {
		// Listing first proves the token, so that a refusal of the create
		// below is the missing scope and not a bad token.
		if _, err := cl.Properties(vctx); err != nil {
			return err
		}
		created, err := cl.EnsureMarker(vctx)
		if ports.KindOf(err) == ports.Unauthorized {
			return fmt.Errorf("the access token may not create contact properties (it lacks the scope crm.schemas.contacts.write); "+
				"create the single-line text contact property %q in HubSpot (Settings → Properties) or grant the token that scope: %w", marker, err)
		}
		if err != nil {
			return fmt.Errorf("create marker property %q: %w", marker, err)
		}
		if created {
			in.log.Info("created the marker property in the HubSpot account", "connection", name, "property", marker)
		}
	}
	err := cl.CheckProperties(vctx, mappedProperties(f, name))
	var pe *hubspot.PropertyError
	if in.opt.dryRun && errors.As(err, &pe) {
		in.log.Warn("dry run: the HubSpot account's contact properties do not fit the campaigns; the service would not start until they do "+
			"(the marker property, if listed, is created at start-up)", "connection", name, "problems", pe.Error())
		return nil
	}
	return err
}

// mappedProperties are the HubSpot property names the campaigns on the
// connection map to. Validation has already refused every target that is
// not a property name, but email and external_id, which the adapter writes
// to email and the external id property and checks itself.
func mappedProperties(f *config.File, conn string) []string {
	var out []string
	add := func(c *config.Campaign) {
		if c == nil || c.Connection != conn || c.Referrers.Action == string(domain.ActionNothing) {
			return
		}
		for _, fl := range c.Referrers.Fields {
			if fl.To != domain.TargetEmail && fl.To != domain.TargetExternalID && !slices.Contains(out, fl.To) {
				out = append(out, fl.To)
			}
		}
	}
	for _, c := range f.Campaigns {
		add(&c)
	}
	add(f.DefaultCampaign)
	slices.Sort(out)
	return out
}

// checkAttributes repeats start-up's check of mapped custom attributes
// (Intercom) and contact properties (HubSpot) against each account, for
// settings loaded later. Problems and failures to ask are logged, not
// fatal: the settings are in force either way.
func (in *instance) checkAttributes(ctx context.Context, f *config.File) {
	for name, cl := range in.hubspots {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.CheckProperties(pctx, mappedProperties(f, name))
		cancel()
		var pe *hubspot.PropertyError
		switch {
		case errors.As(err, &pe):
			in.log.Warn("the HubSpot account's contact properties do not fit the new settings; creates that write the missing ones will be refused and dead-lettered until they exist",
				"connection", name, "problems", pe.Error())
		case err != nil:
			in.log.Warn("could not list the HubSpot account's contact properties to check the new settings", "connection", name, "error", err)
		}
	}
	for name, cl := range in.clients {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		attrs, err := cl.Attributes(actx)
		cancel()
		if err != nil {
			in.log.Warn("could not list the CRM workspace's data attributes to check the new settings", "connection", name, "error", err)
			continue
		}
		in.warnMissingAttributes(f, name, attrs)
	}
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
	if !in.wired.Load() {
		return errors.New("starting: " + *in.phase.Load())
	}
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
// messages and drain in-flight ones (for up to nats.drain_timeout), stop
// HTTP, close connections. /metrics and /readyz (503 "draining") are served
// until the drain is over.
func (in *instance) run(ctx context.Context) error {
	httpErr := in.httpErr
	in.log.Info("referrer-sync running", "version", version, "metrics", "http://"+in.httpLn.Addr().String()+"/metrics",
		"stream", in.consCfg.Stream, "subject", in.consCfg.Subject, "consumer", in.consCfg.Consumer, "workers", in.consCfg.Workers,
		"drain_timeout", in.consCfg.DrainTimeout, "dry_run", in.opt.dryRun)

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go in.pollConsumer(cctx, durationOr(in.file.Metrics.ConsumerPollInterval, 5*time.Second))
	if in.opt.configPath != "" {
		r := newReloader(in)
		go r.run(cctx, durationOr(in.file.Reload.PollInterval, 5*time.Second), in.opt.reload)
	}
	consErr := make(chan error, 1)
	go func() { consErr <- in.consumer.Run(cctx) }()
	var err error
	select {
	case <-ctx.Done():
		in.stopping.Store(true)
		began := time.Now()
		in.log.Info("shutting down: draining in-flight messages", "in_flight", in.consumer.Busy(), "drain_timeout", in.consCfg.DrainTimeout)
		err = <-consErr
		in.log.Info("drained", "took", time.Since(began).Round(time.Millisecond))
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
			if info, err := cons.Info(qctx); err == nil && info.NumAckPending >= 0 {
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

// durationOr returns d, or def when d is unset.
func durationOr(d config.Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
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
