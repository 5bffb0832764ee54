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
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/app"
)

// Handler is what the consumer needs of the application.
type Handler interface {
	Handle(ctx context.Context, m app.Message) app.Verdict
}

// errRetry tells Watermill the delivery was sent back; the consumer has
// already told the server when to redeliver it.
var errRetry = errors.New("retry later")

// doubleAck selects the acknowledgement: a double ack waits for the
// server's confirmation, a plain ack is sent and not waited for. Measured
// with the bench's pipeline configuration (32 workers, batches of 32;
// median of three, as a share of raw consume), the plain ack gives 1.07,
// the double ack 0.60. What the round trip bought, knowing that no
// acknowledgement was lost, the ledger now makes unnecessary: a lost ack
// means one redelivery, which the ledger answers as a duplicate. The
// connection is flushed before a drain ends, so acks written during the
// drain reach the server before it counts as finished.
const doubleAck = false

// Consumer runs a Watermill router over the durable pull consumer. Its
// subscriber pulls in batches from one iterator per process and hands each
// message to one of Workers router handlers; each handler settles its
// message on the server (ack or delayed redelivery) before it returns, so a
// finished message is acknowledged before the drain counts it finished.
type Consumer struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     Config
	router  *message.Router
	sub     *subscriber
	handler Handler
	log     *slog.Logger
	// gate orders the draining flag against work.add, so that once Run
	// has set draining no message it does not wait for is started.
	gate     sync.Mutex
	draining atomic.Bool
	work     tracker
	busy     atomic.Int64
	ran      atomic.Bool
	// What the server has, learnt at start and refreshed while running:
	// an operator may have changed the durable.
	ackWait    atomic.Int64 // nanoseconds
	maxDeliver atomic.Int64 // ≤ 0: unlimited
	handedBack atomic.Int64
}

// New builds the consumer on a dedicated connection, which the consumer's
// Run drains at its end; nc must not be shared with other users. The
// stream topology must have been provisioned (see Provision).
// routerDecorators, if given, decorate the router before handlers are added
// (Prometheus metrics).
func New(nc *nats.Conn, cfg Config, h Handler, log *slog.Logger, routerDecorators ...func(*message.Router)) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	c := &Consumer{nc: nc, js: js, cfg: cfg, handler: h, log: log}
	c.ackWait.Store(int64(cmpOr(cfg.AckWait, DefaultAckWait)))
	c.maxDeliver.Store(int64(cfg.MaxDeliver))
	c.sub = &subscriber{c: c}
	// Watermill's router logs at Info what is Debug for us.
	wmLog := quietAcks{watermill.NewSlogLoggerWithLevelMapping(log.With("component", "watermill"),
		map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}
	// The drain waits for in-flight messages before the router closes; by
	// then nothing is left to wait for.
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 2 * time.Second}, wmLog)
	if err != nil {
		return nil, fmt.Errorf("consumer: router: %w", err)
	}
	for _, d := range routerDecorators {
		d(router)
	}
	// One handler per worker, all fed by the one pull iterator.
	for i := range cfg.Workers {
		router.AddConsumerHandler("referrer_joined_"+strconv.Itoa(i), cfg.Subject, c.sub, c.handle)
	}
	c.router = router
	return c, nil
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// Running is closed once every worker is pulling.
func (c *Consumer) Running() <-chan struct{} { return c.router.Running() }

// Run consumes until ctx is cancelled, then drains: it stops fetching at
// once, hands every message it holds but has not started back to the
// server for another replica (an immediate negative acknowledgement: the
// draining process no longer pulls, so it cannot take them again), lets
// in-flight ones finish and be acknowledged for up to DrainTimeout, flushes
// the acknowledgements and closes the router and the connection. It deletes
// nothing on the server.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	defer c.closeConn()
	// Binding to the durable waits out transient trouble (a fresh cluster
	// still electing the consumer's leader, a leader change): each try is
	// bounded, failures are logged, and a stop while waiting ends Run
	// cleanly, with nothing taken.
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := c.sub.start(sctx)
		cancel()
		if err == nil {
			break
		}
		c.log.Warn("binding to the durable failed; retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	// The router runs on a context of its own: cancelling it would stop
	// the handlers at once, before their messages are settled.
	errc := make(chan error, 1)
	go func() { errc <- c.router.Run(context.WithoutCancel(ctx)) }()
	refreshDone := make(chan struct{})
	refreshCtx, stopRefresh := context.WithCancel(context.Background())
	go func() { defer close(refreshDone); c.refresh(refreshCtx) }()
	defer func() { stopRefresh(); <-refreshDone }()
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
	handedOver := c.sub.stopPulling()
	c.log.Info("draining: fetching nothing new; messages not started go back to the server; waiting for in-flight ones",
		"in_flight", c.busy.Load(), "timeout", c.cfg.DrainTimeout)
	timeout := time.NewTimer(c.cfg.DrainTimeout)
	defer timeout.Stop()
	for _, ch := range []<-chan struct{}{handedOver, c.work.idle()} {
		select {
		case <-ch:
		case <-timeout.C:
			c.log.Warn("drain timeout: unfinished messages will be redelivered after AckWait", "in_flight", c.busy.Load())
		}
	}
	// Every settle and hand-back has been written; make sure it reached
	// the server before the connection goes.
	if err := c.nc.FlushTimeout(5 * time.Second); err != nil {
		c.log.Warn("flushing acknowledgements failed; unacknowledged messages will be redelivered after AckWait", "error", err)
	}
	c.log.Info("consumer finished draining", "handed_back", c.handedBack.Load())
	err := c.router.Close()
	if rerr := <-errc; err == nil {
		err = rerr
	}
	return err
}

// closeConn drains the consumer's own connection (flushing what is still
// buffered) and waits, briefly, for it to close.
func (c *Consumer) closeConn() {
	if err := c.nc.Drain(); err == nil {
		for deadline := time.Now().Add(5 * time.Second); !c.nc.IsClosed() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// refresh re-reads the durable's AckWait and MaxDeliver now and then, so an
// operator's edit while the service runs is followed: the last delivery
// must be recognised, or a message would be sent back that the server
// never delivers again.
func (c *Consumer) refresh(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := c.js.Consumer(ictx, c.cfg.Stream, c.cfg.Consumer)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("reading the durable's settings failed; keeping the last known", "error", err)
			}
			continue
		}
		c.learn(cons.CachedInfo().Config)
	}
}

// learn takes the durable's settings that change how messages are handled.
func (c *Consumer) learn(cc jetstream.ConsumerConfig) {
	if cc.AckWait > 0 {
		if old := time.Duration(c.ackWait.Swap(int64(cc.AckWait))); cc.AckWait < old {
			// Settings derived from the configured ack wait (the ledger's
			// lease) may no longer fit inside the server's.
			c.log.Warn("the durable's ack wait is shorter than configured; it is the processing budget", "ack_wait", cc.AckWait, "was", old)
		} else if cc.AckWait != old {
			c.log.Info("the durable's ack wait is the processing budget", "ack_wait", cc.AckWait, "was", old)
		}
	}
	if old := int(c.maxDeliver.Swap(int64(cc.MaxDeliver))); old != cc.MaxDeliver {
		c.log.Info("the durable's delivery limit changed; the last delivery of a message is dead-lettered rather than retried",
			"max_deliver", cc.MaxDeliver, "was", old)
	}
}

// AckWait is the durable's ack wait as last read from the server: the
// budget of one delivery.
func (c *Consumer) AckWait() time.Duration { return time.Duration(c.ackWait.Load()) }

// Busy is the number of messages being processed now.
func (c *Consumer) Busy() int64 { return c.busy.Load() }

// HandedBack is how many messages the drain gave back to the server
// without starting them.
func (c *Consumer) HandedBack() int64 { return c.handedBack.Load() }

// isLast reports whether the server will not deliver m again.
func (c *Consumer) isLast(m jetstream.Msg) bool {
	limit := c.maxDeliver.Load()
	if limit <= 0 {
		return false
	}
	meta, err := m.Metadata()
	return err == nil && meta.NumDelivered >= uint64(limit)
}

// admit decides, for a message just taken from the iterator, whether it is
// processed (true, counted as in flight) or, while draining, handed back.
// A message on its last delivery is processed even while draining: handed
// back, it would never be delivered again.
func (c *Consumer) admit(m jetstream.Msg, last bool) bool {
	c.gate.Lock()
	if c.draining.Load() && !last {
		c.gate.Unlock()
		c.handBack(m)
		return false
	}
	c.work.add()
	c.gate.Unlock()
	return true
}

// handBack gives a message that was never started back to the server for
// immediate redelivery to another replica. Its delivery count already rose
// when it was delivered here; the hand-back itself spends none, and this
// process, which no longer pulls, does not take it again.
func (c *Consumer) handBack(m jetstream.Msg) {
	c.handedBack.Add(1)
	if err := m.Nak(); err != nil {
		c.log.Warn("handing a message back failed; it is redelivered after AckWait", "error", err)
	}
}

// deliveryKey carries a *delivery in a Watermill message's context from the
// subscriber to the handler.
type deliveryKey struct{}

// delivery is one JetStream delivery on its way through the router.
type delivery struct {
	msg      jetstream.Msg
	received time.Time
	last     bool
	once     sync.Once
	finished func()
}

// finish marks the delivery settled for the drain, once.
func (d *delivery) finish() { d.once.Do(d.finished) }

func (c *Consumer) handle(msg *message.Message) error {
	d, _ := msg.Context().Value(deliveryKey{}).(*delivery)
	if d == nil {
		return errors.New("consumer: message without a delivery")
	}
	defer d.finish()
	if c.process(d).Retry {
		return errRetry
	}
	return nil
}

// process hands one delivery to the application and settles it on the
// server by its verdict.
func (c *Consumer) process(d *delivery) app.Verdict {
	c.busy.Add(1)
	defer c.busy.Add(-1)
	m := app.Message{
		Body:    d.msg.Data(),
		Headers: lowerHeaders(d.msg.Headers()),
		// For a dead letter: what came in, untouched.
		OriginalHeaders: d.msg.Headers(),
		Subject:         d.msg.Subject(),
		Received:        d.received,
		LastDelivery:    d.last,
	}
	if meta, err := d.msg.Metadata(); err == nil {
		m.Sequence = meta.Sequence.Stream
		m.Attempt = int(meta.NumDelivered) //nolint:gosec // G115: a delivery count, bounded by max_deliver
		m.Published = meta.Timestamp
	}
	// Leave room before AckWait so the verdict is acted on while the
	// message is still ours.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(c.ackWait.Load())*9/10)
	defer cancel()
	v := c.handler.Handle(ctx, m)
	c.settle(d, m.Attempt, v)
	return v
}

// lowerHeaders is the application's view of the headers: lower-case names,
// the first value of each.
func lowerHeaders(h nats.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			if _, dup := out[strings.ToLower(k)]; !dup {
				out[strings.ToLower(k)] = vs[0]
			}
		}
	}
	return out
}

// settle acknowledges or schedules the redelivery on the server before the
// handler returns, so the drain never counts a message finished that the
// server does not know about (Watermill would act only after the handler
// returns).
func (c *Consumer) settle(d *delivery, attempt int, v app.Verdict) {
	var err error
	if v.Retry {
		if d.last {
			c.log.Error("a message on its last delivery was sent back; the server will not deliver it again (see the MAX_DELIVERIES advisory)",
				"event_id", v.EventID, "reason", v.Reason)
		}
		delay := v.Delay
		if delay <= 0 {
			delay = c.retryDelay(max(attempt, 1))
		}
		err = d.msg.NakWithDelay(min(delay, c.cfg.MaxRetryDelay))
	} else if doubleAck {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = d.msg.DoubleAck(ctx)
		cancel()
	} else {
		err = d.msg.Ack()
	}
	if err != nil {
		// The server redelivers after AckWait; the ledger makes that
		// harmless.
		c.log.Warn("acknowledgement failed; the message will be redelivered", "retry", v.Retry, "event_id", v.EventID, "error", err)
	}
}

// retryDelay spaces redeliveries: exponential from RetryDelay with ±10 %
// jitter, capped at MaxRetryDelay. It never terminates a message: the
// application dead-letters at its attempt cap.
func (c *Consumer) retryDelay(delivered int) time.Duration {
	delay := c.cfg.RetryDelay
	for i := 1; i < delivered && delay < c.cfg.MaxRetryDelay; i++ {
		delay *= 2
	}
	delay = min(delay, c.cfg.MaxRetryDelay)
	jitter := time.Duration(rand.Int64N(int64(delay)/5+1)) - delay/10 //nolint:gosec // G404: jitter spreads retries; nothing secret depends on it
	return delay + jitter
}

// tracker counts messages in flight and tells when none are.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil when nobody waits
}

func (t *tracker) add() { t.mu.Lock(); t.n++; t.mu.Unlock() }

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n--; t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

// idle is closed when nothing is in flight.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	return t.zero
}

// quietAcks demotes to debug Watermill's "handler returned error" for
// retries, which are not errors of the service.
type quietAcks struct{ watermill.LoggerAdapter }

func (q quietAcks) Error(msg string, err error, fields watermill.LogFields) {
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
