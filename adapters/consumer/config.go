// Package consumer is the inbound adapter: it provisions the JetStream
// stream, dead-letter stream and durable pull consumer, consumes
// referrer.joined through a Watermill router and hands every delivery to the
// application, turning its verdict into an ack or a delayed redelivery. It
// also publishes dead letters (ports.DeadLetters).
package consumer

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Defaults of the server-side settings, used when Provision creates what is
// missing. An existing stream or durable keeps its own values unless the
// configuration sets them (see Provision).
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 1000

	DefaultStreamMaxAge             = 7 * 24 * time.Hour
	DefaultStreamMaxBytes     int64 = 1 << 30
	DefaultDeadLetterMaxAge         = 30 * 24 * time.Hour
	DefaultDeadLetterMaxBytes int64 = 256 << 20
)

// Config configures the stream topology and the consumer.
//
// The server-side settings (AckWait, MaxDeliver, MaxAckPending and the
// streams' retention) are "set" when non-zero: Provision creates what is
// missing with the value or its default, and changes an existing stream or
// durable only where the value is set, so an operator's `nats consumer
// edit` survives a restart. WithDefaults leaves them as they are. The
// consumer itself follows what the server has (AckWait, MaxDeliver), not
// the configuration.
type Config struct {
	Stream            string // default "REFERRALS"
	Subject           string // default "referrer.joined"
	Consumer          string // durable name shared by every replica; default "referrer-sync"
	DeadLetterSubject string // default "dlq." + Subject
	DeadLetterStream  string // default Stream + "_DLQ"
	Replicas          int    // stream replicas when the service creates the streams; default 1
	// Workers is how many messages one process handles at once. Default
	// 32: a worker spends nearly all its time waiting on round trips (the
	// ledger's, the CRM's), so more in flight cost little and the bench
	// measured 8 workers at 0.36–0.43 of raw consume with the ledger, 32 at
	// 0.54.
	Workers int
	// PullBatch is how many messages one pull request asks the server
	// for; the process holds at most this many delivered messages that no
	// worker has started. Default: Workers. Chosen by measurement (the
	// bench's pipeline configuration, 32 workers, plain acks; median of
	// three, as a share of raw consume: batch 1 0.44, 8 0.86, 32 1.07, 64
	// 1.20): a batch per worker is most of the gain. And the AckWait
	// budget, which the
	// server starts at delivery, stays the handler's: with no more
	// buffered than there are workers, a message waits about one handler
	// time before it starts. Capped by the durable's MaxRequestBatch when
	// an operator set one.
	PullBatch int

	// AckWait is the server's redelivery timer for an unacknowledged
	// message, and the budget of one attempt. Unset: DefaultAckWait.
	AckWait time.Duration
	// MaxDeliver caps deliveries on the server. Unset (0): unlimited, and
	// an existing durable's limit is left alone; -1: unlimited, applied.
	// The application counts failed attempts itself and waits are not
	// failures, so the server should not be what ends an event; when a
	// limit is set, the last delivery is marked (app.Message.LastDelivery)
	// and dead-lettered rather than dropped.
	MaxDeliver int
	// MaxAckPending caps messages delivered and not yet acknowledged,
	// across replicas: in flight, buffered, and waiting for a delayed
	// retry. Unset: DefaultMaxAckPending.
	MaxAckPending int

	// Retention of the event stream and of the dead-letter stream. Unset:
	// the Default* values above when created, an existing stream's own
	// otherwise. A byte limit of -1 is unlimited.
	StreamMaxAge       time.Duration
	StreamMaxBytes     int64
	DeadLetterMaxAge   time.Duration
	DeadLetterMaxBytes int64

	// RetryDelay is the first redelivery delay after a failed attempt; it
	// doubles per attempt with jitter up to MaxRetryDelay. Defaults 1s, 1m.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// DrainTimeout bounds how long shutdown waits for in-flight messages.
	// Default 25s.
	DrainTimeout time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, n := range []struct{ field, v string }{{"stream", c.Stream}, {"consumer", c.Consumer}, {"dead_letter_stream", c.DeadLetterStream}} {
		if n.v != "" && !nameRE.MatchString(n.v) {
			errs = append(errs, fmt.Errorf("nats.%s: %q may contain only letters, digits, '-' and '_'", n.field, n.v))
		}
	}
	for _, s := range []struct{ field, v string }{{"subject", c.Subject}, {"dead_letter_subject", c.DeadLetterSubject}} {
		if strings.ContainsAny(s.v, " \t*>") {
			errs = append(errs, fmt.Errorf("nats.%s: %q must be a literal subject without spaces or wildcards", s.field, s.v))
		}
	}
	if c.Subject != "" && c.Subject == c.DeadLetterSubject {
		errs = append(errs, errors.New("nats.dead_letter_subject: must differ from nats.subject"))
	}
	if c.Workers < 0 || c.Workers > 1024 {
		errs = append(errs, fmt.Errorf("nats.workers: %d is not between 1 and 1024", c.Workers))
	}
	if c.PullBatch < 0 || c.PullBatch > 4096 {
		errs = append(errs, fmt.Errorf("nats.pull_batch: %d is not between 1 and 4096", c.PullBatch))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("nats.ack_wait: %s is negative", c.AckWait))
	}
	if c.MaxDeliver < -1 {
		errs = append(errs, fmt.Errorf("nats.max_deliver: %d is neither a limit, 0 (unset: unlimited) nor -1 (unlimited)", c.MaxDeliver))
	}
	if c.MaxAckPending < -1 {
		errs = append(errs, fmt.Errorf("nats.max_ack_pending: %d is neither a limit, 0 (unset) nor -1 (unlimited)", c.MaxAckPending))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"stream_max_age", c.StreamMaxAge}, {"dead_letter_max_age", c.DeadLetterMaxAge}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("nats.%s: %s is negative", d.field, d.v))
		}
	}
	for _, b := range []struct {
		field string
		v     int64
	}{{"stream_max_bytes", c.StreamMaxBytes}, {"dead_letter_max_bytes", c.DeadLetterMaxBytes}} {
		if b.v < -1 {
			errs = append(errs, fmt.Errorf("nats.%s: %d is neither a limit, 0 (unset) nor -1 (unlimited)", b.field, b.v))
		}
	}
	return errors.Join(errs...)
}

// setDefaults fills the names and the process's own settings. The
// server-side settings stay as set: zero means "not set" to Provision.
func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = "REFERRALS"
	}
	if c.Subject == "" {
		c.Subject = "referrer.joined"
	}
	if c.Consumer == "" {
		c.Consumer = "referrer-sync"
	}
	if c.DeadLetterSubject == "" {
		c.DeadLetterSubject = "dlq." + c.Subject
	}
	if c.DeadLetterStream == "" {
		c.DeadLetterStream = c.Stream + "_DLQ"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Workers == 0 {
		c.Workers = 32
	}
	if c.PullBatch == 0 {
		c.PullBatch = c.Workers
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = time.Minute
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 25 * time.Second
	}
}

// WithDefaults returns the config with the names and the process's own
// settings defaulted, so callers (and tools such as the dlq command) see
// the effective names. The server-side settings are left unset; see
// Config.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
