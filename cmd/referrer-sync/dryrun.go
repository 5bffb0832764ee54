package main

// The dry run (`run --dry-run`): campaign settings tried on live traffic
// with nothing written. It consumes with a durable of its own, so the
// service keeps every message; it reads the ledger and the CRM but writes to
// neither, and dead-letters nothing. Every write port is wired to a
// refusal, so a mistake in the wiring fails loudly instead of writing.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// dryRunSuffix is appended to nats.consumer to name the dry run's durable.
const dryRunSuffix = "-dry-run"

// errDryRun is what every write port answers in a dry run.
var errDryRun = errors.New("dry run: writes are disabled")

// provisionDryRun creates the dry run's durable consumer when it is missing
// and leaves an existing one alone. It delivers only messages published
// from its creation on: a trial of new settings is about live traffic, and
// replaying a whole stream would spend the CRM's rate limit, which the dry
// run shares with the service. The stream must exist: a dry run creates
// nothing the service owns. The durable is never deleted by the service
// (delete it with `nats consumer rm` after the trial).
func provisionDryRun(ctx context.Context, js jetstream.JetStream, cfg consumer.Config) error {
	if _, err := js.Stream(ctx, cfg.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("dry run: stream %s does not exist; a dry run reads the service's stream and does not create it (start the service first): %w", cfg.Stream, err)
		}
		return fmt.Errorf("dry run: look up stream %s: %w", cfg.Stream, err)
	}
	_, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("dry run: look up consumer %s: %w", cfg.Consumer, err)
	}
	_, err = js.CreateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		Description:   "referrer-sync dry run: sees the service's messages, writes nothing",
		FilterSubject: cfg.Subject,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: max(256, cfg.Workers*8),
	})
	if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) { // another dry-run replica won
		return fmt.Errorf("dry run: create consumer %s: %w", cfg.Consumer, err)
	}
	return nil
}

type refuseDeadLetters struct{}

func (refuseDeadLetters) DeadLetter(context.Context, ports.DeadLetter) error { return errDryRun }

// readOnlyCRM passes Find through and refuses writes.
type readOnlyCRM struct{ ports.CRM }

func (readOnlyCRM) Create(context.Context, domain.Contact) (ports.Created, error) {
	return ports.Created{}, &ports.Error{Op: "create", Kind: ports.Permanent, Err: errDryRun}
}

func (readOnlyCRM) Update(context.Context, string, domain.Contact) error {
	return &ports.Error{Op: "update", Kind: ports.Permanent, Err: errDryRun}
}

// dryRunHandler plans each message, logs and counts the plan, and
// acknowledges it on the dry run's own durable.
type dryRunHandler struct {
	svc     *app.Service
	metrics *metrics.Metrics
	log     *slog.Logger
}

func (d dryRunHandler) Handle(ctx context.Context, m app.Message) app.Verdict {
	began := time.Now()
	p := d.svc.Plan(ctx, m)
	if p.Retry {
		d.log.InfoContext(ctx, "dry run: a read failed; the message will be retried", "event_id", p.EventID, "campaign", p.Campaign,
			"attempt", m.Attempt, "cause", p.Reason, "error", p.Err)
		return p.Verdict
	}
	d.metrics.DryRun(p.Label, p.Action, p.Outcome, p.Reason)
	attrs := []any{"event_id", p.EventID, "campaign", p.Campaign, "outcome", p.Outcome, "action", p.Action,
		"attempts", m.Attempt, "duration", time.Since(began)}
	if p.ContactID != "" {
		attrs = append(attrs, "contact_id", p.ContactID)
	}
	if p.Reason != "" {
		attrs = append(attrs, "reason", p.Reason)
	}
	if p.Err != nil {
		attrs = append(attrs, "detail", p.Err.Error())
	}
	d.log.InfoContext(ctx, "dry run: "+describePlan(p), attrs...)
	return p.Verdict
}

// describePlan says in words what the service would have done.
func describePlan(p app.Planned) string {
	switch p.Outcome {
	case app.OutcomeWouldCreate:
		return "would create " + string(p.Action.Role())
	case app.OutcomeWouldUpdate:
		return "would update the existing contact"
	case app.OutcomeWouldSkip:
		return "would skip: the contact exists"
	case app.OutcomeWouldDeadLetter:
		return "would dead-letter (" + p.Reason + ")"
	case domain.OutcomeDuplicate:
		return "already applied (duplicate)"
	case domain.OutcomeNothing:
		return "nothing to do (action nothing)"
	case domain.OutcomeUnconfigured:
		return "campaign not configured"
	default:
		return string(p.Outcome)
	}
}
