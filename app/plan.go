package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Dry-run outcomes: what Handle would have done, reported by Plan. The
// outcomes that write nothing (nothing, duplicate, unconfigured) keep
// their ordinary names.
const (
	OutcomeWouldCreate     domain.Outcome = "would_create"
	OutcomeWouldUpdate     domain.Outcome = "would_update"
	OutcomeWouldSkip       domain.Outcome = "would_skip"
	OutcomeWouldDeadLetter domain.Outcome = "would_dead_letter"
)

// Planned is Plan's answer for one delivery.
type Planned struct {
	// Verdict is settled with one of the dry-run outcomes, or a retry when
	// a read failed transiently. Reason is the dead-letter reason a real
	// run would have given, or the retry cause.
	Verdict
	// Label is the campaign's metric label, bounded by the configuration
	// exactly as Handle bounds it.
	Label  string
	Action domain.Action
}

// Plan decides what Handle would do with a delivery, with reads only: it
// decodes, looks the campaign up, maps, checks the ledger for an applied
// event and the person's remembered contact, asks the CRM to find matches
// and applies the duplicate policy; it never locks, writes to the ledger,
// writes to the CRM, dead-letters, or counts metrics. The caller reports
// the result (`run --dry-run` logs it and counts it in a metric of its
// own), so a trial of new campaign settings on live traffic changes
// nothing.
//
// Creates whose outcome is unknown (pending in the ledger) are not
// reconciled: Plan reports what the decision would be from the CRM's
// current state.
func (s *Service) Plan(ctx context.Context, m Message) Planned {
	ev, err := domain.DecodeEvent(m.Body, m.Headers)
	if err != nil {
		var inv *domain.InvalidEventError
		errors.As(err, &inv)
		label := LabelUnknown
		if ev.CampaignID != "" {
			label = s.label(s.catalog.Load(), ev.CampaignID)
		}
		return s.planned(ev, label, "", Verdict{Outcome: OutcomeWouldDeadLetter, Reason: inv.Reason, Err: err})
	}
	catalog := s.catalog.Load() // one version for the whole decision, as in Handle
	camp, ok := catalog.Lookup(ev.CampaignID)
	if !ok {
		return s.planned(ev, LabelUnconfigured, "", Verdict{Outcome: domain.OutcomeUnconfigured})
	}
	label := ev.CampaignID
	if _, listed := catalog.Campaigns[ev.CampaignID]; !listed {
		label = LabelUnconfigured
	}
	if camp.Action == domain.ActionNothing {
		return s.planned(ev, label, camp.Action, Verdict{Outcome: domain.OutcomeNothing})
	}
	contact, err := domain.MapContact(camp, ev)
	if err != nil {
		return s.planned(ev, label, camp.Action, Verdict{Outcome: OutcomeWouldDeadLetter, Reason: domain.ReasonMapping, Err: err})
	}
	v := s.plan(ctx, m, camp, ev, contact)
	if v.Retry && !v.Wait && m.Attempt >= s.cfg.MaxAttempts {
		// Handle counts failures in the ledger; a dry run writes none, so
		// deliveries stand in for them.
		reason := ReasonAttemptsExhausted
		if ports.KindOf(v.Err) == ports.Unauthorized {
			reason = ReasonUnauthorized
		}
		v = Verdict{Outcome: OutcomeWouldDeadLetter, Reason: reason,
			Err: fmt.Errorf("gave up after %d deliveries: %w", m.Attempt, v.Err)}
	}
	return s.planned(ev, label, camp.Action, v)
}

func (s *Service) planned(ev domain.ReferrerJoined, label string, action domain.Action, v Verdict) Planned {
	v.EventID, v.Campaign = ev.ID, ev.CampaignID
	return Planned{Verdict: v, Label: label, Action: action}
}

// plan is the read-only counterpart of apply and execute.
func (s *Service) plan(ctx context.Context, m Message, camp domain.Campaign, ev domain.ReferrerJoined, contact domain.Contact) Verdict {
	crm := s.crms[camp.Connection]
	if crm == nil {
		return Verdict{Retry: true, Wait: true, Reason: CauseNoCRM, Err: fmt.Errorf("connection %q has no CRM", camp.Connection)}
	}
	p, err := s.ledger.Person(ctx, camp.Connection, contact.Email)
	if err != nil {
		return Verdict{Retry: true, Wait: true, Reason: CauseLedger, Err: err} // a wait, as in Handle: never dead-lettered
	}
	r := eventOf(&p, ev.ID)
	replay := m.Headers[ReplayedFromHeader]
	switch {
	case r.Terminal() && r.Outcome == domain.OutcomeDeadLettered && replay != "" && replay != r.ReplayedFrom:
		// A replay re-arms the event, as in Handle.
		if r.ContactID != "" {
			return Verdict{Outcome: domain.OutcomeDuplicate, ContactID: r.ContactID}
		}
		r = ports.EventRecord{ID: ev.ID}
	case r.Terminal():
		return Verdict{Outcome: domain.OutcomeDuplicate, ContactID: r.ContactID}
	case r.Failures >= s.cfg.MaxAttempts && (p.Pending == nil || p.Pending.EventID != ev.ID):
		return Verdict{Outcome: OutcomeWouldDeadLetter, Reason: deadLetterReason(r.Reason),
			Err: fmt.Errorf("out of attempts: %d failed, the last %s", r.Failures, r.Reason)}
	}
	match, found := domain.Match{ID: p.ContactID}, p.ContactID != ""
	if !found {
		who := domain.IdentityOf(contact)
		matches, err := crm.Find(ctx, who)
		if err != nil {
			return s.planFailure(err)
		}
		match, found, _ = domain.PickMatch(who, matches)
	}
	switch domain.Decide(camp, found) {
	case domain.DecideCreate:
		return Verdict{Outcome: OutcomeWouldCreate}
	case domain.DecideUpdate:
		return Verdict{Outcome: OutcomeWouldUpdate, ContactID: match.ID}
	case domain.DecideSkip:
		return Verdict{Outcome: OutcomeWouldSkip, ContactID: match.ID}
	case domain.DecideNothing:
	}
	return Verdict{Outcome: domain.OutcomeNothing}
}

// planFailure classifies a failed read as Handle would, with the dry-run
// outcome for a failure that would be dead-lettered.
func (s *Service) planFailure(err error) Verdict {
	f := classify(err)
	if f.permanent {
		return Verdict{Outcome: OutcomeWouldDeadLetter, Reason: ReasonCRMRejected, Err: err}
	}
	return Verdict{Retry: true, Wait: f.wait, Reason: f.cause(), Err: err, Delay: f.delay}
}
