package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// attempt is one delivery of a valid event for a campaign that acts: the
// exactly-once section.
//
// The protocol, in plain words (the README's Guarantees has the diagram):
// everything known of a person is one ledger record, read once. Every
// decision is made from that read, and every write is a compare-and-set on
// the revision read, so a worker whose read went stale — another worker
// wrote in between — writes nothing and decides again. Updates and skips
// need nothing more: they are idempotent and their outcome is written at
// the read revision. A create is not idempotent, so before it is sent it is
// written into the record as pending, with the moment after which it will
// not be sent (its lease); while a create is pending nobody else creates
// the person, and once its lease is over whoever comes next finds out
// whether it was applied (by the marker it carried, or by its external id)
// before anything else happens to the person.
type attempt struct {
	s       *Service
	msg     Message
	ev      domain.ReferrerJoined
	camp    domain.Campaign
	contact domain.Contact
	label   string
	start   time.Time
	crm     ports.CRM
	// token names this delivery in the record (CountedBy, FailedBy).
	token string

	// matches found while resolving a pending create, reused to decide.
	matches []domain.Match
	looked  bool
}

func (a *attempt) run(ctx context.Context) Verdict {
	s := a.s
	if a.crm = s.crms[a.camp.Connection]; a.crm == nil {
		// A catalog swapped in by SetCatalog can name a connection this
		// process has no CRM for. That is an operator's mistake, not the
		// event's: wait, so a corrected catalog still applies it.
		return a.report(ctx, wait(CauseNoCRM, fmt.Errorf("connection %q has no CRM", a.camp.Connection), 0))
	}
	// Inside one process, wait for the person's turn rather than bounce
	// the message through the broker.
	unlock, err := s.locks.lock(ctx, a.camp.Connection+"/"+a.contact.Email)
	if err != nil {
		return a.report(ctx, wait(CauseCancelled, err, 0))
	}
	defer unlock()
	return a.report(ctx, a.loop(ctx))
}

// loop reads the person's record and decides, again after every
// compare-and-set lost before any CRM write.
func (a *attempt) loop(ctx context.Context) Verdict {
	for range maxConflicts {
		p, err := a.s.ledger.Person(ctx, a.camp.Connection, a.contact.Email)
		if err != nil {
			return wait(CauseLedger, err, 0)
		}
		a.matches, a.looked = nil, false
		v, err := a.step(ctx, &p)
		if errors.Is(err, ports.ErrConflict) {
			continue
		}
		if err != nil {
			return wait(CauseLedger, err, 0)
		}
		return v
	}
	return wait(CauseLedger, fmt.Errorf("the person's record kept changing (%d times)", maxConflicts), 0)
}

// step decides once from one read of the record. It returns ErrConflict
// when a write it made before any CRM write lost to another worker.
func (a *attempt) step(ctx context.Context, p *ports.Person) (Verdict, error) {
	s, id := a.s, a.ev.ID
	r := eventOf(p, id)
	if r.Terminal() {
		replay := a.msg.Headers[ReplayedFromHeader]
		switch {
		case r.CountedBy == "":
			// Settled while another event resolved this one's create:
			// this message counts it, once.
			if err := a.claim(ctx, p, r); err != nil {
				return Verdict{}, err
			}
			return settled(r.Outcome, r.ContactID), nil
		case r.Outcome == domain.OutcomeDeadLettered && replay != "" && replay != r.ReplayedFrom:
			// An operator replayed the dead letter: the event starts
			// afresh. Only a replay re-arms a dead-lettered event.
			s.log.InfoContext(ctx, "a replayed dead letter re-arms its event", "event_id", id, "replayed_from", replay)
			if r.ContactID != "" {
				// Its create was found applied after it was dead-lettered.
				q := eventOf(p, id)
				q.Outcome, q.ContactID, q.CountedBy, q.ReplayedFrom, q.Reason = domain.OutcomeCreated, r.ContactID, a.token, replay, ""
				setEvent(p, q)
				if err := s.write(ctx, p, a.counted); err != nil {
					return Verdict{}, err
				}
				return settled(domain.OutcomeCreated, r.ContactID), nil
			}
			r = ports.EventRecord{ID: id, ReplayedFrom: replay}
			setEvent(p, r)
		default:
			return settled(domain.OutcomeDuplicate, r.ContactID), nil
		}
	}
	if p.Pending != nil {
		v, resolved := a.resolve(ctx, p)
		if !resolved {
			return v, nil
		}
		if r = eventOf(p, id); r.Terminal() {
			// This event's own create, found applied.
			if err := s.write(ctx, p, a.counted); err != nil {
				return Verdict{}, err
			}
			return settled(r.Outcome, r.ContactID), nil
		}
	}
	if r.Failures >= s.cfg.MaxAttempts {
		// Out of attempts (a crash or a lost acknowledgement came between
		// the last failure and its dead letter): dead-letter it now.
		return a.deadLetterEvent(ctx, p, deadLetterReason(r.Reason),
			fmt.Errorf("gave up after %d failed attempts; the last was %s", r.Failures, r.Reason)), nil
	}

	var match domain.Match
	found := false
	switch {
	case p.ContactID != "":
		match, found = domain.Match{ID: p.ContactID}, true
	default:
		if !a.looked {
			who := domain.IdentityOf(a.contact)
			ms, err := a.crm.Find(ctx, who)
			if err != nil {
				return a.failed(ctx, p, classify(err), time.Time{})
			}
			a.matches = ms
		}
		var ambiguous bool
		match, found, ambiguous = domain.PickMatch(domain.IdentityOf(a.contact), a.matches)
		if ambiguous {
			s.log.InfoContext(ctx, "several contacts match; picked deterministically (user before lead, then oldest)",
				"connection", a.camp.Connection, "candidates", len(a.matches), "contact_id", match.ID, "role", match.Role)
		}
	}

	switch domain.Decide(a.camp, found) {
	case domain.DecideCreate:
		return a.create(ctx, p)
	case domain.DecideUpdate:
		return a.update(ctx, p, match.ID)
	case domain.DecideSkip:
		p.ContactID = match.ID
		settleEvent(p, id, domain.OutcomeSkipped, match.ID, "", a.token, s.cfg.Now())
		if err := s.write(ctx, p, a.counted); err != nil {
			return Verdict{}, err
		}
		return settled(domain.OutcomeSkipped, match.ID), nil
	case domain.DecideNothing:
	}
	return settled(domain.OutcomeNothing, ""), nil
}

// create records the create as pending, sends it within its lease, and
// records what came of it.
func (a *attempt) create(ctx context.Context, p *ports.Person) (Verdict, error) {
	s, id := a.s, a.ev.ID
	notAfter := s.cfg.Now().Add(s.cfg.Lease)
	if d, ok := ctx.Deadline(); ok && d.Before(notAfter) {
		notAfter = d
	}
	p.Pending = &ports.PendingCreate{EventID: id, Owner: s.cfg.Owner, NotAfter: notAfter, ExternalID: a.contact.ExternalID}
	if err := s.write(ctx, p, func(q *ports.Person) bool { return ownsPending(q, id, notAfter) }); err != nil {
		// Not sent. A write that failed otherwise than by conflict may
		// still have been stored: whoever reads it resolves it like any
		// pending create, and finds it not applied.
		return Verdict{}, err
	}
	contact := a.contact
	contact.Marker = id
	cctx, cancel := context.WithDeadline(ctx, notAfter)
	res, err := a.crm.Create(cctx, contact)
	cancel()
	if err != nil {
		f := classify(err)
		if !f.certain && errors.Is(err, context.DeadlineExceeded) && !s.cfg.Now().Before(notAfter) {
			f.err = fmt.Errorf("create not confirmed within its lease (%s): %w", s.cfg.Lease, err)
		}
		return a.failed(ctx, p, f, notAfter)
	}
	if !res.Existing {
		return a.record(ctx, p, notAfter, domain.OutcomeCreated, res.ID, "")
	}
	// The CRM already had this person (a search miss, e.g. its indexing
	// lag): the duplicate policy applies, never an error.
	s.log.InfoContext(ctx, "create answered: the contact exists; the duplicate policy applies",
		"connection", a.camp.Connection, "event_id", id, "contact_id", res.ID)
	if domain.Decide(a.camp, true) == domain.DecideSkip {
		return a.record(ctx, p, notAfter, domain.OutcomeSkipped, res.ID, "")
	}
	// The pending create is settled (nothing was created) before the
	// update, so the person is not held while it runs.
	q, err := s.commit(ctx, p, func(q *ports.Person) bool {
		if !ownsPending(q, id, notAfter) {
			return false
		}
		q.Pending = nil
		if q.ContactID == "" {
			q.ContactID = res.ID
		}
		return true
	})
	if err != nil {
		return wait(CauseLedger, err, 0), nil
	}
	return a.update(ctx, &q, res.ID)
}

// update writes the mapped fields onto the contact. It holds no claim on
// the person: an update is idempotent, and its outcome is recorded at the
// revision read (or merged into a newer one).
func (a *attempt) update(ctx context.Context, p *ports.Person, contactID string) (Verdict, error) {
	err := a.crm.Update(ctx, contactID, a.contact.ForUpdate())
	if ports.KindOf(err) == ports.NotFound {
		// The contact was deleted or merged away. Forget it; the retry
		// searches afresh. This counts as a failed attempt so that a
		// search that keeps returning a vanished contact cannot loop.
		f := classify(err)
		return a.failedWith(ctx, p, f, time.Time{}, CauseContactGone, func(q *ports.Person) {
			if q.ContactID == contactID {
				q.ContactID = ""
			}
		})
	}
	if err != nil {
		return a.failed(ctx, p, classify(err), time.Time{})
	}
	return a.record(ctx, p, time.Time{}, domain.OutcomeUpdated, contactID, "")
}

// record writes the event's outcome after a CRM write (merging into a newer
// record if another worker wrote meanwhile) and releases the event's
// pending create, if any. The outcome is this delivery's to count only if
// its own write settled the event.
func (a *attempt) record(ctx context.Context, p *ports.Person, notAfter time.Time, o domain.Outcome, contactID, reason string) (Verdict, error) {
	s, id := a.s, a.ev.ID
	now := s.cfg.Now()
	q, err := s.commit(ctx, p, func(q *ports.Person) bool {
		changed := false
		if !notAfter.IsZero() && ownsPending(q, id, notAfter) {
			q.Pending, changed = nil, true
		}
		if r := eventOf(q, id); r.Terminal() {
			if o == domain.OutcomeCreated && changed {
				// Settled meanwhile (dead-lettered on a last delivery)
				// while its create was applied: the person has this
				// contact, and the record keeps it for a replay.
				if q.ContactID == "" {
					q.ContactID = contactID
				}
				if r.Outcome == domain.OutcomeDeadLettered && r.ContactID == "" {
					r.ContactID = contactID
					setEvent(q, r)
				}
			}
			return changed
		}
		if q.Pending != nil && q.Pending.EventID == id && o != domain.OutcomeCreated {
			// Another delivery of this same event is creating the person
			// (a duplicate publish handled at the same time): what this
			// event did is decided when that create is resolved.
			return changed
		}
		if q.Pending != nil && o == domain.OutcomeCreated {
			// Our create was applied, yet someone resolved it as not
			// applied and is creating again: the CRM's search lagged more
			// than the connection's search_lag allows.
			s.log.ErrorContext(ctx, "a create resolved as not applied was applied; raise the connection's search_lag",
				"connection", a.camp.Connection, "event_id", id, "contact_id", contactID, "pending_event_id", q.Pending.EventID)
		}
		if q.ContactID == "" && q.Pending == nil {
			q.ContactID = contactID
		}
		settleEvent(q, id, o, contactID, reason, a.token, now)
		return true
	})
	if err != nil {
		// The CRM write happened. If it was a create, its pending record
		// says so, and the redelivery finds it by its marker; an update is
		// idempotent and is simply made again.
		return wait(CauseLedger, fmt.Errorf("record the outcome: %w", err), 0), nil
	}
	r := eventOf(&q, id)
	switch {
	case r.CountedBy == a.token:
		return settled(o, contactID), nil
	case !r.Terminal():
		// Left to the resolution of this event's own create, which
		// another delivery of it sent: come back when it is known.
		var until time.Time
		if q.Pending != nil {
			until = q.Pending.NotAfter
		}
		return wait(CausePersonBusy, errors.New("another delivery of this event is creating the person"), s.until(until)), nil
	}
	// Another delivery of this event settled it first.
	return settled(domain.OutcomeDuplicate, r.ContactID), nil
}

// claim records that this delivery counts r's outcome, which was settled on
// the event's behalf while another event was handled.
func (a *attempt) claim(ctx context.Context, p *ports.Person, r ports.EventRecord) error {
	r.CountedBy = a.token
	setEvent(p, r)
	return a.s.write(ctx, p, a.counted)
}

// counted reports whether this delivery's write settling the event landed.
func (a *attempt) counted(q *ports.Person) bool { return eventOf(q, a.ev.ID).CountedBy == a.token }

// failed records a failed attempt (or a wait) after a CRM failure. notAfter
// is set when the failure is the event's own create's: a create that
// certainly was not applied releases its pending record, an uncertain one
// keeps it for whoever resolves it.
func (a *attempt) failed(ctx context.Context, p *ports.Person, f failure, notAfter time.Time) (Verdict, error) {
	return a.failedWith(ctx, p, f, notAfter, f.cause(), nil)
}

func (a *attempt) failedWith(ctx context.Context, p *ports.Person, f failure, notAfter time.Time, cause string, also func(q *ports.Person)) (Verdict, error) {
	s, id := a.s, a.ev.ID
	if f.permanent {
		if f.certain && !notAfter.IsZero() && ownsPending(p, id, notAfter) {
			p.Pending = nil
		}
		return a.deadLetterEvent(ctx, p, ReasonCRMRejected, f.err), nil
	}
	now := s.cfg.Now()
	q, err := s.commit(ctx, p, func(q *ports.Person) bool {
		changed := false
		if f.certain && !notAfter.IsZero() && ownsPending(q, id, notAfter) {
			q.Pending, changed = nil, true
		}
		if also != nil {
			also(q)
			changed = true
		}
		if f.wait {
			return changed
		}
		r := eventOf(q, id)
		if r.Terminal() || slices.Contains(r.FailedBy, a.token) {
			return changed // settled meanwhile, or this failure is counted
		}
		r.FailedBy = append(slices.Clone(r.FailedBy), a.token)
		if over := len(r.FailedBy) - s.cfg.MaxAttempts; over > 0 {
			r.FailedBy = r.FailedBy[over:]
		}
		r.Failures++
		if r.FirstFailure.IsZero() {
			r.FirstFailure = now
		}
		r.At, r.Reason = now, cause
		setEvent(q, r)
		return true
	})
	if err != nil {
		s.log.WarnContext(ctx, "recording a failed attempt failed", "event_id", id, "error", err)
		return wait(CauseLedger, errors.Join(f.err, err), 0), nil
	}
	if f.wait {
		return wait(cause, f.err, f.delay), nil
	}
	r := eventOf(&q, id)
	if r.Terminal() {
		// Settled meanwhile by another delivery (or recorded on its
		// behalf): the next delivery counts or absorbs it.
		return wait(CausePersonBusy, fmt.Errorf("the event was settled meanwhile: %w", f.err), 0), nil
	}
	v := retry(cause, f.err, f.delay)
	v.failures, v.firstFailure = r.Failures, r.FirstFailure
	if r.Failures >= s.cfg.MaxAttempts && (q.Pending == nil || q.Pending.EventID != id) {
		// Out of attempts, and no create of this event's is unresolved
		// (one that is must be resolved first: it may have been applied).
		return a.deadLetterEvent(ctx, &q, deadLetterReason(cause),
			fmt.Errorf("gave up after %d failed attempts: %w", r.Failures, f.err)), nil
	}
	return v, nil
}

// deadLetterEvent stores the message in the dead-letter stream and then
// records the event as dead-lettered, a terminal outcome: a redelivery is
// a duplicate, and only a replay of the dead letter re-arms it. In that
// order, so that a crash in between dead-letters it twice rather than not
// at all; the outcome is counted by the delivery whose record settled it.
func (a *attempt) deadLetterEvent(ctx context.Context, p *ports.Person, reason string, cause error) Verdict {
	s, id := a.s, a.ev.ID
	r := eventOf(p, id)
	d := s.deadLetterOf(a.msg, a.ev, reason, cause, r.FirstFailure)
	err := s.dlq.DeadLetter(ctx, d)
	for try := 1; err != nil && a.msg.LastDelivery && try < 3; try++ {
		// The server will not deliver the message again: try harder.
		err = s.dlq.DeadLetter(ctx, d)
	}
	if err != nil {
		return s.deadLetterFailed(ctx, a.msg, a.ev, reason, err)
	}
	q, err := s.commit(ctx, p, func(q *ports.Person) bool {
		if eventOf(q, id).Terminal() {
			return false
		}
		settleEvent(q, id, domain.OutcomeDeadLettered, "", reason, a.token, s.cfg.Now())
		return true
	})
	if err != nil && a.msg.LastDelivery {
		// No redelivery will come to record it: the dead letter stands.
		s.log.WarnContext(ctx, "recording a dead letter failed on the last delivery; the event is dead-lettered but not recorded so", "event_id", id, "error", err)
	} else if err != nil {
		// Not acknowledged: the redelivery dead-letters it again (a
		// second, harmless dead letter) and records it.
		s.log.WarnContext(ctx, "recording a dead letter failed; the message will be redelivered and dead-lettered again", "event_id", id, "error", err)
		return wait(CauseLedger, fmt.Errorf("record the dead letter: %w", err), 0)
	}
	if rec := eventOf(&q, id); err == nil && rec.CountedBy != a.token {
		s.log.WarnContext(ctx, "another delivery settled the event while it was being dead-lettered; the dead letter is redundant and its replay a duplicate",
			"event_id", id, "outcome", rec.Outcome, "reason", reason)
		return settled(domain.OutcomeDuplicate, rec.ContactID)
	}
	return s.deadLettered(ctx, a.msg, a.ev, a.label, a.camp.Action, reason, cause)
}
