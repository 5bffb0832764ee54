package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Provision creates what the service needs and is missing: the event
// stream, the dead-letter stream and the durable pull consumer, with the
// configured settings or their defaults. It never deletes anything.
//
// What exists belongs to whoever changed it last: Provision applies only
// the settings the configuration sets (see Config) and logs every other
// difference from what it would have created, leaving it alone. So an
// operator's `nats consumer edit --max-pending=1000 --wait=2m` survives a
// restart, and a setting put in the file wins over one made by hand.
// Two exceptions, because the service cannot work otherwise: the durable
// must use explicit acks (an error), and its filter must be the
// configured subject (changed, with a warning).
//
// It is safe to run from every replica at once: a create that loses a race
// with another replica's continues as if the resource had existed.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ensureStream(ctx, js, log, streamSpec{
		config: jetstream.StreamConfig{
			Name:        cfg.Stream,
			Description: "referral platform events",
			Subjects:    []string{cfg.Subject},
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  2 * time.Minute,
		},
		maxAge: cfg.StreamMaxAge, defaultMaxAge: DefaultStreamMaxAge, ageKey: "nats.stream_max_age",
		maxBytes: cfg.StreamMaxBytes, defaultMaxBytes: DefaultStreamMaxBytes, bytesKey: "nats.stream_max_bytes",
	}); err != nil {
		return err
	}
	if err := ensureStream(ctx, js, log, streamSpec{
		config: jetstream.StreamConfig{
			Name:        cfg.DeadLetterStream,
			Description: "referrer-sync dead letters: events that can never be processed, with the reason in headers",
			Subjects:    []string{cfg.DeadLetterSubject},
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  10 * time.Minute,
		},
		maxAge: cfg.DeadLetterMaxAge, defaultMaxAge: DefaultDeadLetterMaxAge, ageKey: "nats.dead_letter_max_age",
		maxBytes: cfg.DeadLetterMaxBytes, defaultMaxBytes: DefaultDeadLetterMaxBytes, bytesKey: "nats.dead_letter_max_bytes",
	}); err != nil {
		return err
	}
	return ensureConsumer(ctx, js, log, cfg)
}

// consumerConfig is the durable Provision creates.
func consumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		Description:   "referrer-sync: referrer.joined to CRM contacts",
		FilterSubject: cfg.Subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cmpOr(cfg.AckWait, DefaultAckWait),
		MaxDeliver:    cmpOr(cfg.MaxDeliver, -1),
		MaxAckPending: cmpOr(cfg.MaxAckPending, DefaultMaxAckPending),
	}
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, log *slog.Logger, cfg Config) error {
	want := consumerConfig(cfg)
	what := fmt.Sprintf("consumer %s on stream %s", cfg.Consumer, cfg.Stream)
	cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		_, err = js.CreateConsumer(ctx, cfg.Stream, want)
		if err == nil {
			log.Info("created the durable consumer", "resource", what, "ack_wait", want.AckWait,
				"max_deliver", want.MaxDeliver, "max_ack_pending", want.MaxAckPending)
			return nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("consumer: create %s: %w", what, err)
		}
		// Another replica created it first, differently: reconcile.
		cons, err = js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	}
	if err != nil {
		return fmt.Errorf("consumer: look up %s: %w", what, err)
	}
	have := cons.CachedInfo().Config
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		return fmt.Errorf("consumer: %s acknowledges with policy %q; the service needs explicit acks (this cannot be changed on a durable: delete it or name another in nats.consumer)", what, have.AckPolicy)
	}
	upd := have
	changed := false
	if same := have.FilterSubject == cfg.Subject && len(have.FilterSubjects) == 0 || slices.Equal(have.FilterSubjects, []string{cfg.Subject}); !same {
		log.Warn("the durable's filter is not the configured subject; changing it", "resource", what,
			"filter_subject", have.FilterSubject, "filter_subjects", have.FilterSubjects, "subject", cfg.Subject)
		upd.FilterSubject, upd.FilterSubjects = cfg.Subject, nil
		changed = true
	}
	changed = reconcile(log, what, "nats.ack_wait", have.AckWait, cfg.AckWait, want.AckWait, &upd.AckWait) || changed
	changed = reconcile(log, what, "nats.max_deliver", have.MaxDeliver, cfg.MaxDeliver, want.MaxDeliver, &upd.MaxDeliver) || changed
	changed = reconcile(log, what, "nats.max_ack_pending", have.MaxAckPending, cfg.MaxAckPending, want.MaxAckPending, &upd.MaxAckPending) || changed
	if have.DeliverPolicy != want.DeliverPolicy {
		log.Info("left as found: the durable's deliver policy differs from what the service creates", "resource", what,
			"deliver_policy", have.DeliverPolicy.String(), "service_creates", want.DeliverPolicy.String())
	}
	if len(have.BackOff) > 0 {
		log.Info("left as found: the durable has a redelivery backoff; after a timeout it, not ack_wait, spaces redeliveries", "resource", what,
			"backoff", have.BackOff)
	}
	if have.MaxRequestBatch > 0 && have.MaxRequestBatch < cfg.PullBatch {
		log.Info("left as found: the durable caps pull requests below nats.pull_batch; the consumer pulls fewer at a time", "resource", what,
			"max_request_batch", have.MaxRequestBatch, "pull_batch", cfg.PullBatch)
	}
	if !changed {
		return nil
	}
	if _, err := js.UpdateConsumer(ctx, cfg.Stream, upd); err != nil {
		return fmt.Errorf("consumer: update %s: %w", what, err)
	}
	return nil
}

// reconcile compares one setting of an existing resource with the
// configuration. A value the configuration sets (non-zero) and the
// resource does not have is applied to *upd and reported true; any other
// difference from what the service would create is logged and left alone.
func reconcile[T comparable](log *slog.Logger, what, key string, have, set, create T, upd *T) bool {
	var unset T
	switch {
	case set != unset && have != set:
		log.Info("applying the configured setting", "resource", what, "setting", key, "was", have, "now", set)
		*upd = set
		return true
	case set == unset && have != create:
		log.Info("left as found: differs from what the service would create; set it in the configuration to change it",
			"resource", what, "setting", key, "value", have, "service_creates", create)
	}
	return false
}

// streamSpec is a stream Provision creates, with the retention settings
// the configuration may set.
type streamSpec struct {
	config                    jetstream.StreamConfig
	maxAge, defaultMaxAge     time.Duration
	maxBytes, defaultMaxBytes int64
	ageKey, bytesKey          string
}

func ensureStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger, sp streamSpec) error {
	sc := sp.config
	sc.MaxAge = cmpOr(sp.maxAge, sp.defaultMaxAge)
	sc.MaxBytes = cmpOr(sp.maxBytes, sp.defaultMaxBytes)
	what := "stream " + sc.Name
	s, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, sc)
		if err == nil {
			log.Info("created the stream", "resource", what, "subjects", sc.Subjects, "max_age", sc.MaxAge, "max_bytes", sc.MaxBytes)
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("consumer: create %s: %w", what, err)
		}
		// Another replica created it first, differently: reconcile.
		s, err = js.Stream(ctx, sc.Name)
	}
	if err != nil {
		return fmt.Errorf("consumer: look up %s: %w", what, err)
	}
	have := s.CachedInfo().Config
	if !slices.ContainsFunc(have.Subjects, func(p string) bool { return subjectMatches(p, sc.Subjects[0]) }) {
		return fmt.Errorf("consumer: %s exists but does not capture subject %s (it has %v)", what, sc.Subjects[0], have.Subjects)
	}
	upd := have
	changed := reconcile(log, what, sp.ageKey, have.MaxAge, sp.maxAge, sc.MaxAge, &upd.MaxAge)
	changed = reconcile(log, what, sp.bytesKey, have.MaxBytes, sp.maxBytes, sc.MaxBytes, &upd.MaxBytes) || changed
	if !changed {
		return nil
	}
	if _, err := js.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("consumer: update %s: %w", what, err)
	}
	return nil
}

// subjectMatches reports whether the literal subject falls under the
// pattern, with NATS wildcards '*' (one token) and '>' (the rest).
func subjectMatches(pattern, subject string) bool {
	pt, st := splitTokens(pattern), splitTokens(subject)
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

func splitTokens(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
