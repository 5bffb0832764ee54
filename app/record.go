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

// maxConflicts bounds how often one delivery reads its person's record
// again after losing a compare-and-set to another worker before it gives
// the message back.
const maxConflicts = 8

// eventOf returns the record of event id in p (the zero record when p has
// none).
func eventOf(p *ports.Person, id string) ports.EventRecord {
	if i := slices.IndexFunc(p.Events, func(r ports.EventRecord) bool { return r.ID == id }); i >= 0 {
		return p.Events[i]
	}
	return ports.EventRecord{ID: id}
}

// setEvent stores r in p, as the newest record.
func setEvent(p *ports.Person, r ports.EventRecord) {
	p.Events = slices.DeleteFunc(p.Events, func(e ports.EventRecord) bool { return e.ID == r.ID })
	p.Events = append(p.Events, r)
}

// settleEvent records a terminal outcome for event id unless it has one
// already: a terminal outcome is never overwritten, so the first writer's
// outcome is the event's.
func settleEvent(p *ports.Person, id string, o domain.Outcome, contactID, reason string, at time.Time) {
	r := eventOf(p, id)
	if r.Terminal() {
		return
	}
	r.Outcome, r.ContactID, r.At, r.Reason = o, contactID, at, reason
	setEvent(p, r)
}

// ownsPending reports whether p's pending create is the one event id sent
// with the given not-after (a later create by the same event is another).
func ownsPending(p *ports.Person, id string, notAfter time.Time) bool {
	return p.Pending != nil && p.Pending.EventID == id && p.Pending.NotAfter.Equal(notAfter)
}

// prune bounds the events kept in p: those settled longer than Remember ago
// go first, then the oldest settled ones beyond MaxEvents. Events still
// failing are kept (they are bounded by MaxAttempts and are few).
func (s *Service) prune(p *ports.Person, now time.Time) {
	cutoff := now.Add(-s.cfg.Remember)
	p.Events = slices.DeleteFunc(p.Events, func(r ports.EventRecord) bool {
		return r.At.Before(cutoff) && !r.Unreported
	})
	for over := len(p.Events) - s.cfg.MaxEvents; over > 0; over-- {
		i := slices.IndexFunc(p.Events, func(r ports.EventRecord) bool { return r.Terminal() && !r.Unreported })
		if i < 0 {
			break
		}
		p.Events = slices.Delete(p.Events, i, i+1)
	}
}

// put writes p at the revision it was read at, bounded.
func (s *Service) put(ctx context.Context, p *ports.Person) error {
	s.prune(p, s.cfg.Now())
	return s.ledger.Put(ctx, p)
}

// commit writes a change that must land because a CRM effect already
// happened (or certainly did not): it applies change to p and writes it;
// when another worker wrote first, it reads the record again and applies
// the same change to what it finds, so nothing the other worker wrote is
// lost. change reports false when there is nothing to write. commit returns
// the record as written (or as found).
func (s *Service) commit(ctx context.Context, p *ports.Person, change func(q *ports.Person) bool) (ports.Person, error) {
	// The CRM write is done: the record must be written even if the
	// delivery's own deadline has passed.
	ctx = context.WithoutCancel(ctx)
	q := *p
	q.Events = slices.Clone(p.Events)
	for range maxConflicts {
		if !change(&q) {
			return q, nil
		}
		err := s.put(ctx, &q)
		if err == nil {
			return q, nil
		}
		if !errors.Is(err, ports.ErrConflict) {
			return q, fmt.Errorf("record: %w", err)
		}
		if q, err = s.ledger.Person(ctx, p.Connection, p.Email); err != nil {
			return q, fmt.Errorf("record: %w", err)
		}
	}
	return q, fmt.Errorf("record: %w %d times in a row", ports.ErrConflict, maxConflicts)
}
