package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Provision creates what the service needs and is missing: the event
// stream, the dead-letter stream and the durable pull consumer. It is
// idempotent and safe to run from every replica at once. It never deletes
// anything, and it leaves an existing stream's configuration alone: streams
// often belong to the platform team, not to this service.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "referral platform events",
		Subjects:    []string{cfg.Subject},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return err
	}
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.DeadLetterStream,
		Description: "referrer-sync dead letters: events that can never be processed, with the reason in headers",
		Subjects:    []string{cfg.DeadLetterSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  10 * time.Minute,
	}); err != nil {
		return err
	}
	_, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, consumerConfig(cfg))
	if err != nil {
		return fmt.Errorf("consumer: provision durable %s on %s: %w", cfg.Consumer, cfg.Stream, err)
	}
	return nil
}

func consumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		Description:   "referrer-sync: referrer.joined to CRM contacts",
		FilterSubject: cfg.Subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		// Enough for every worker of a handful of replicas, small enough
		// that a slow CRM does not strand thousands of messages in
		// clients' buffers while their AckWait runs.
		MaxAckPending: max(256, cfg.Workers*8),
	}
}

func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, sc)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("consumer: create stream %s: %w", sc.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("consumer: look up stream %s: %w", sc.Name, err)
	}
	info := s.CachedInfo()
	for _, subj := range info.Config.Subjects {
		if subjectMatches(subj, sc.Subjects[0]) {
			return nil
		}
	}
	return fmt.Errorf("consumer: stream %s exists but does not capture subject %s (it has %v)", sc.Name, sc.Subjects[0], info.Config.Subjects)
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
