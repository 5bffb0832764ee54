package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// report counts and logs the attempt's verdict: a settled outcome once, a
// dead letter where it was stored, a retry as a retry. On the last
// delivery the server will make, a retry is dead-lettered instead.
func (a *attempt) report(ctx context.Context, v Verdict) Verdict {
	s := a.s
	switch {
	case v.Retry && a.msg.LastDelivery:
		p, err := s.ledger.Person(ctx, a.camp.Connection, a.contact.Email)
		if err != nil {
			p = ports.Person{Connection: a.camp.Connection, Email: a.contact.Email}
		}
		if r := eventOf(&p, a.ev.ID); r.Terminal() {
			o := domain.OutcomeDuplicate
			if r.CountedBy == "" && a.claim(ctx, &p, r) == nil {
				o = r.Outcome // else counted by whoever wrote first
			}
			return s.settle(ctx, a.msg, a.ev, a.label, a.camp.Action, settled(o, r.ContactID), a.start)
		}
		// If this dead letter cannot be stored either, the error log says
		// so: the server will not deliver the message again.
		return a.deadLetterEvent(ctx, &p, ReasonDeliveriesExhausted,
			fmt.Errorf("the server's delivery limit was reached before the event settled (last cause %s): %w", v.Reason, v.Err))
	case v.Retry:
		s.metrics.Retry(a.label, v.Reason)
		level := slog.LevelInfo
		if v.Wait {
			level = slog.LevelDebug // waiting is normal; failures are worth a line
		}
		s.log.Log(ctx, level, "event will be retried", "event_id", a.ev.ID, "campaign", a.ev.CampaignID,
			"attempt", a.msg.Attempt, "cause", v.Reason, "failures", v.failures, "wait", v.Wait, "delay", v.Delay, "error", v.Err)
		return v
	case v.Outcome == domain.OutcomeDeadLettered:
		return v // counted and logged where it was stored
	}
	return s.settle(ctx, a.msg, a.ev, a.label, a.camp.Action, v, a.start)
}

// deadLetter stores a message in the dead-letter stream and counts it; if
// it cannot be stored, the message is retried (never dropped).
func (s *Service) deadLetter(ctx context.Context, m Message, ev domain.ReferrerJoined, label string, action domain.Action, reason string, cause error, firstFailure time.Time) Verdict {
	d := s.deadLetterOf(m, ev, reason, cause, firstFailure)
	err := s.dlq.DeadLetter(ctx, d)
	for try := 1; err != nil && m.LastDelivery && try < 3; try++ {
		err = s.dlq.DeadLetter(ctx, d) // the server will not deliver it again: try harder
	}
	if err != nil {
		s.metrics.Retry(label, CauseDeadLetterFailed) // an attempt's retries are counted by its report
		return s.deadLetterFailed(ctx, m, ev, reason, err)
	}
	return s.deadLettered(ctx, m, ev, label, action, reason, cause)
}

func (s *Service) deadLetterOf(m Message, ev domain.ReferrerJoined, reason string, cause error, firstFailure time.Time) ports.DeadLetter {
	return ports.DeadLetter{
		Body:      m.Body,
		Headers:   m.OriginalHeaders,
		Reason:    reason,
		Message:   cause.Error(),
		Attempts:  m.Attempt,
		Subject:   m.Subject,
		FirstSeen: firstFailure,
		Sequence:  m.Sequence,
		EventID:   ev.ID,
		Campaign:  ev.CampaignID,
		Failed:    s.cfg.Now(),
	}
}

func (s *Service) deadLetterFailed(ctx context.Context, m Message, ev domain.ReferrerJoined, reason string, err error) Verdict {
	s.log.ErrorContext(ctx, "dead-lettering failed; the message will be redelivered", "event_id", ev.ID, "reason", reason,
		"last_delivery", m.LastDelivery, "error", err)
	return Verdict{Retry: true, Wait: true, Reason: CauseDeadLetterFailed, Err: err}
}

// deadLettered counts and logs a stored dead letter.
func (s *Service) deadLettered(ctx context.Context, m Message, ev domain.ReferrerJoined, label string, action domain.Action, reason string, cause error) Verdict {
	s.metrics.Outcome(label, action, domain.OutcomeDeadLettered, reason)
	s.log.WarnContext(ctx, "event dead-lettered", "event_id", ev.ID, "campaign", ev.CampaignID, "outcome", domain.OutcomeDeadLettered,
		"reason", reason, "attempts", m.Attempt, "stream_seq", m.Sequence, "detail", cause.Error())
	return Verdict{Outcome: domain.OutcomeDeadLettered, Reason: reason, Err: cause}
}

// settle counts and logs one settled outcome.
func (s *Service) settle(ctx context.Context, m Message, ev domain.ReferrerJoined, label string, action domain.Action, v Verdict, start time.Time) Verdict {
	s.metrics.Outcome(label, action, v.Outcome, "")
	now := s.cfg.Now()
	received := m.Received
	if received.IsZero() {
		received = start
	}
	s.metrics.Processed(max(now.Sub(received), 0))
	since := ev.Time
	if since.IsZero() {
		since = m.Published
	}
	if !since.IsZero() && v.Outcome != domain.OutcomeDuplicate {
		s.metrics.EventAge(received.Sub(since))
	}
	s.log.InfoContext(ctx, "event settled", "event_id", ev.ID, "campaign", ev.CampaignID, "outcome", v.Outcome,
		"contact_id", v.ContactID, "attempts", m.Attempt, "duration", now.Sub(start))
	return v
}
