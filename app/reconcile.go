package app

import (
	"context"
	"fmt"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// resolve settles the person's pending create, in p only (the caller
// writes p with whatever it does next). It reports false with the verdict
// to return when the create cannot be settled yet.
//
//   - Until its lease is over, the create may still be sent: wait for it.
//   - A contact carrying the create's marker is the create's: it is
//     recorded as created for the event that sent it.
//   - Nothing carries the marker, and the create carried an external id:
//     the lookup by external id is consistent, so once the connection's
//     commit grace has passed since the lease ended (a request the client
//     gave up on may land late), the create was not applied.
//   - Nothing carries the marker and there was no external id (a lead, or
//     a user matched by email): search may not show it yet. Only once the
//     commit grace and the search lag have passed since the lease ended is
//     it proven not applied. Other contacts of the person being visible
//     prove nothing: the create's own contact may still be hidden.
func (a *attempt) resolve(ctx context.Context, p *ports.Person) (Verdict, bool) {
	s := a.s
	pend := *p.Pending
	now := s.cfg.Now()
	if now.Before(pend.NotAfter) {
		return wait(CausePersonBusy, fmt.Errorf("another worker (%s) may be creating this person until %s",
			pend.Owner, pend.NotAfter.Format("15:04:05.000")), s.until(pend.NotAfter)), false
	}
	who := domain.IdentityOf(a.contact)
	who.Marker = pend.EventID
	if pend.ExternalID != "" {
		who.ExternalID = pend.ExternalID // look it up where the CRM is consistent
	}
	matches, err := a.crm.Find(ctx, who)
	if err != nil {
		v, _ := a.failed(ctx, p, classify(err), time.Time{})
		return v, false
	}
	if m, ok := markedBy(matches, pend.EventID); ok {
		p.Pending, p.ContactID = nil, m.ID
		if r := eventOf(p, pend.EventID); r.Outcome == domain.OutcomeDeadLettered && r.ContactID == "" {
			// Dead-lettered while its create was unresolved (a delivery
			// limit): the record keeps what the create did, for a replay.
			r.ContactID = m.ID
			setEvent(p, r)
		} else if !r.Terminal() {
			r.Outcome, r.ContactID, r.At = domain.OutcomeCreated, m.ID, now
			if pend.EventID == a.ev.ID {
				r.CountedBy = a.token
			} // else the creating event's own message counts it when it comes back
			setEvent(p, r)
		}
		s.log.InfoContext(ctx, "resolved a create whose outcome was unknown: it was applied",
			"connection", a.camp.Connection, "pending_event_id", pend.EventID, "event_id", a.ev.ID, "contact_id", m.ID)
		a.matches, a.looked = matches, true
		return Verdict{}, true
	}
	// A create the client gave up on may still land a little later (the
	// CRM may commit a request after its client timed out): nothing is
	// proven until that grace has passed, and for search, until the
	// contact would be searchable too.
	until := pend.NotAfter.Add(s.commitGrace(a.camp.Connection))
	if pend.ExternalID == "" {
		until = until.Add(s.searchLag(a.camp.Connection))
	}
	if now.Before(until) {
		return wait(CauseAwaitingSearch, fmt.Errorf("a create by event %s, sent until %s, may not be visible yet",
			pend.EventID, pend.NotAfter.Format("15:04:05.000")), s.until(until)), false
	}
	p.Pending = nil
	s.log.InfoContext(ctx, "a create whose outcome was unknown was not applied; the person may be created again",
		"connection", a.camp.Connection, "pending_event_id", pend.EventID, "event_id", a.ev.ID,
		"proof", map[bool]string{true: "external id lookup", false: "search lag passed"}[pend.ExternalID != ""])
	a.matches, a.looked = matches, true
	return Verdict{}, true
}

// markedBy returns the contact carrying the marker.
func markedBy(matches []domain.Match, marker string) (domain.Match, bool) {
	for _, m := range matches {
		if marker != "" && m.Marker == marker {
			return m, true
		}
	}
	return domain.Match{}, false
}
