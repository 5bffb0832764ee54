package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/referrer-sync/referrer-sync/app"
)

// Handler is what the consumer needs of the application.
type Handler interface {
	Handle(ctx context.Context, m app.Message) app.Verdict
}

// Metadata keys the unmarshaler sets from the JetStream delivery.
const (
	metaSubject   = "_rs_subject"
	metaSequence  = "_rs_stream_seq"
	metaDelivered = "_rs_num_delivered"
	metaPublished = "_rs_published"
	metaHeaders   = "_rs_h_"
)

// errRetry tells Watermill to negatively acknowledge; the subscriber's
// NakDelay then picks the redelivery delay.
var errRetry = errors.New("retry later")

// Consumer runs the Watermill router over the durable pull consumer.
type Consumer struct {
	nc       *nats.Conn
	cfg      Config
	router   *message.Router
	sub      *wmjs.Subscriber
	handler  Handler
	log      *slog.Logger
	gate     sync.Mutex // orders the draining flag against inflight.Add
	draining atomic.Bool
	inflight sync.WaitGroup
	busy     atomic.Int64
	ran      atomic.Bool
	// deliveries maps a Watermill message UUID to its JetStream delivery,
	// so the handler can acknowledge on the server before it reports the
	// message done (see settle).
	deliveries sync.Map
}

// New builds the consumer on a dedicated connection, which the consumer's
// Close drains; nc must not be shared with other users. The stream topology
// must have been provisioned (see Provision). routerDecorators, if given,
// decorates the router before handlers are added (Prometheus metrics).
func New(nc *nats.Conn, cfg Config, h Handler, log *slog.Logger, routerDecorators ...func(*message.Router)) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Consumer{nc: nc, cfg: cfg, handler: h, log: log}
	// Watermill's subscriber logs every message at Info; that is Debug
	// for us.
	wmLog := quietAcks{watermill.NewSlogLoggerWithLevelMapping(log.With("component", "watermill"),
		map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}

	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:   nc,
		Logger: wmLog,
		// The watermill-side timer equals the server's, so the library
		// never gives up on a message the server still considers ours.
		AckWaitTimeout: cfg.AckWait,
		// Bind to the pre-provisioned durable. The library's initializers
		// would create an ephemeral consumer (every replica gets every
		// message) or derive names from the dotted subject (invalid), and
		// would delete the consumer on close.
		ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, _ string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
			return cons, nil, err
		},
		// One message buffered per pull loop: the server's AckWait starts
		// at delivery, so a deep client buffer would eat the budget.
		ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(1)},
		NakDelay:       retryDelay{c: c},
		Unmarshaler:    unmarshaler{c: c},
	})
	if err != nil {
		return nil, fmt.Errorf("consumer: subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.DrainTimeout}, wmLog)
	if err != nil {
		return nil, fmt.Errorf("consumer: router: %w", err)
	}
	for _, d := range routerDecorators {
		d(router)
	}
	// One handler per worker: each is an independent pull loop on the
	// shared durable with one message in flight.
	for i := range cfg.Workers {
		router.AddConsumerHandler("referrer_joined_"+strconv.Itoa(i), cfg.Subject, sub, c.handle)
	}
	c.sub, c.router = sub, router
	return c, nil
}

// Running is closed once every worker is pulling.
func (c *Consumer) Running() <-chan struct{} { return c.router.Running() }

// Run consumes until ctx is cancelled, then drains: it stops taking new
// messages (those already delivered to this process are handed back at
// once), lets in-flight ones finish and be acknowledged for up to
// DrainTimeout, and closes the router. It deletes nothing on the server.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	// The router runs on a context of its own: cancelling it would close
	// the subscriber at once and drop in-flight acks.
	errc := make(chan error, 1)
	go func() { errc <- c.router.Run(context.Background()) }()
	select {
	case err := <-errc:
		return fmt.Errorf("consumer: router stopped: %w", err)
	case <-ctx.Done():
	}
	// Closing a router whose handlers are still starting makes it wait out
	// its whole close timeout; let them start first.
	select {
	case <-c.router.Running():
	case err := <-errc:
		return fmt.Errorf("consumer: router stopped: %w", err)
	}
	c.gate.Lock()
	c.draining.Store(true)
	c.gate.Unlock()
	c.log.Info("draining: no new messages; waiting for in-flight ones", "in_flight", c.busy.Load(), "timeout", c.cfg.DrainTimeout)
	done := make(chan struct{})
	go func() { c.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.cfg.DrainTimeout):
		c.log.Warn("drain timeout: unfinished messages will be redelivered after AckWait", "in_flight", c.busy.Load())
	}
	// Stop pulling before the router closes the subscriber: draining the
	// connection hands every message already delivered to this process to
	// a handler, which gives it back, and lets every pull callback finish.
	// watermill-nats v2.1.3 would otherwise close its output channel while
	// a callback may still send on it (a data race, and a possible "send
	// on closed channel" panic), and drop buffered messages without a NAK.
	if err := c.nc.Drain(); err == nil {
		for deadline := time.Now().Add(5 * time.Second); !c.nc.IsClosed() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	err := c.router.Close()
	if rerr := <-errc; err == nil {
		err = rerr
	}
	return err
}

// Busy is the number of messages being processed now.
func (c *Consumer) Busy() int64 { return c.busy.Load() }

func (c *Consumer) handle(msg *message.Message) error {
	var delivery jetstream.Msg
	if d, ok := c.deliveries.LoadAndDelete(msg.UUID); ok {
		delivery = d.(jetstream.Msg)
	}
	c.gate.Lock()
	if c.draining.Load() {
		c.gate.Unlock()
		if delivery != nil {
			// Hand it back, not to be redelivered before this drain is
			// over: an immediate NAK comes straight back to this
			// process's pull loops and burns the message's deliveries
			// towards MaxDeliver, after which the server never
			// delivers it again.
			_ = delivery.NakWithDelay(c.handBackDelay())
		}
		return errRetry
	}
	c.inflight.Add(1)
	c.gate.Unlock()
	c.busy.Add(1)
	defer func() { c.busy.Add(-1); c.inflight.Done() }()

	md := msg.Metadata
	m := app.Message{
		Body:     msg.Payload,
		Headers:  map[string]string{},
		Subject:  md.Get(metaSubject),
		Received: time.Now(),
	}
	m.Sequence, _ = strconv.ParseUint(md.Get(metaSequence), 10, 64)
	m.Attempt, _ = strconv.Atoi(md.Get(metaDelivered))
	if ns, err := strconv.ParseInt(md.Get(metaPublished), 10, 64); err == nil {
		m.Published = time.Unix(0, ns)
	}
	for k, v := range md {
		if name, ok := strings.CutPrefix(k, metaHeaders); ok {
			m.Headers[name] = v
		}
	}
	// Leave room before AckWait so the verdict is acted on while the
	// message is still ours.
	ctx, cancel := context.WithTimeout(msg.Context(), c.cfg.AckWait*9/10)
	defer cancel()
	v := c.handler.Handle(ctx, m)
	if delivery != nil {
		c.settle(delivery, m.Attempt, v)
	}
	if v.Retry {
		return errRetry
	}
	return nil
}

// settle acknowledges on the server before the handler returns. Watermill
// would ack only after the handler returns, and on shutdown it drops acks
// that are still on their way (watermill-nats v2.1.3 closes the subscriber
// first), so drained work would be redelivered. Acking here means a
// finished message is acknowledged before the drain counts it finished.
// Watermill's own later ack then meets an already-acknowledged message,
// which quietAcks keeps out of the error log.
func (c *Consumer) settle(d jetstream.Msg, attempt int, v app.Verdict) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if v.Retry {
		delay := v.Delay
		if delay <= 0 {
			delay = retryDelay{c: c}.WaitTime(uint64(max(attempt, 1)))
		}
		err = d.NakWithDelay(min(delay, c.cfg.MaxRetryDelay))
	} else {
		err = d.DoubleAck(ctx)
	}
	if err != nil {
		// The server redelivers after AckWait; the ledger makes that
		// harmless.
		c.log.Warn("acknowledgement failed; the message will be redelivered", "retry", v.Retry, "event_id", v.EventID, "error", err)
	}
}

// handBackDelay is how long a message handed back while draining stays
// away: long enough that this process's idle pull loops do not take it
// again and again, short enough that another replica soon does.
func (c *Consumer) handBackDelay() time.Duration { return min(c.cfg.DrainTimeout, 5*time.Second) }

// retryDelay spaces redeliveries: exponential from RetryDelay with ±20 %
// jitter, capped at MaxRetryDelay; handBackDelay while draining. It never
// terminates a message: the application dead-letters at its attempt cap.
type retryDelay struct{ c *Consumer }

func (d retryDelay) WaitTime(delivered uint64) time.Duration {
	if d.c.draining.Load() {
		return d.c.handBackDelay()
	}
	cfg := d.c.cfg
	delay := cfg.RetryDelay
	for i := uint64(1); i < delivered && delay < cfg.MaxRetryDelay; i++ {
		delay *= 2
	}
	delay = min(delay, cfg.MaxRetryDelay)
	jitter := time.Duration(rand.Int64N(int64(delay)/5+1)) - delay/10
	return delay + jitter
}

// unmarshaler never fails: watermill-nats v2.1.3 crashes the process on an
// unmarshal error, and an undecodable message must reach the application to
// be dead-lettered with a reason, not disappear.
type unmarshaler struct{ c *Consumer }

func (u unmarshaler) Unmarshal(msg jetstream.Msg) (*message.Message, error) {
	m := message.NewMessage(nuid.Next(), msg.Data())
	u.c.deliveries.Store(m.UUID, msg)
	m.Metadata.Set(metaSubject, msg.Subject())
	for k, vs := range msg.Headers() {
		if len(vs) > 0 {
			m.Metadata.Set(metaHeaders+strings.ToLower(k), vs[0])
		}
	}
	if meta, err := msg.Metadata(); err == nil {
		m.Metadata.Set(metaSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
		m.Metadata.Set(metaDelivered, strconv.FormatUint(meta.NumDelivered, 10))
		m.Metadata.Set(metaPublished, strconv.FormatInt(meta.Timestamp.UnixNano(), 10))
	}
	return m, nil
}

// quietAcks demotes to debug Watermill's "already acknowledged" errors,
// which follow every message settle acknowledged itself, and its "handler
// returned error" for retries, which are not errors of the service.
type quietAcks struct{ watermill.LoggerAdapter }

func (q quietAcks) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, nats.ErrConnectionClosed) && msg == "Failed to close subscriber" {
		q.Debug(msg+": the consumer drained its connection first", fields)
		return
	}
	if errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		q.Debug(msg+": already acknowledged", fields)
		return
	}
	if errors.Is(err, errRetry) {
		// The application logged why at the right level; to Watermill a
		// retry is a handler error.
		q.Debug(msg+": retry later", fields)
		return
	}
	q.LoggerAdapter.Error(msg, err, fields)
}

func (q quietAcks) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietAcks{q.LoggerAdapter.With(fields)}
}
