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

// Config configures the stream topology and the consumer.
type Config struct {
	Stream            string // default "REFERRALS"
	Subject           string // default "referrer.joined"
	Consumer          string // durable name shared by every replica; default "referrer-sync"
	DeadLetterSubject string // default "dlq." + Subject
	DeadLetterStream  string // default Stream + "_DLQ"
	Replicas          int    // stream replicas when the service creates the streams; default 1
	// Workers is how many messages one process handles at once. Default 8.
	Workers int
	// AckWait is the server's redelivery timer for an unacknowledged
	// message, and the budget of one attempt. Default 30s.
	AckWait time.Duration
	// MaxDeliver is the server-side backstop on deliveries. The
	// application dead-letters at its own cap first; this is set above it.
	MaxDeliver int
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
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("nats.ack_wait: %s is negative", c.AckWait))
	}
	if c.MaxDeliver < 0 {
		errs = append(errs, fmt.Errorf("nats.max_deliver: %d is negative", c.MaxDeliver))
	}
	return errors.Join(errs...)
}

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
		c.Workers = 8
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 10
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

// WithDefaults returns the config with every unset field defaulted, so
// callers (and tools such as the dlq command) see the effective names.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
