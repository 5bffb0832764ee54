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
// outcome is the event's. countedBy is the delivery that counts it, or
// empty when the event's own message has yet to.
func settleEvent(p *ports.Person, id string, o domain.Outcome, contactID, reason, countedBy string, at time.Time) {
	r := eventOf(p, id)
	if r.Terminal() {
		return
	}
	r.Outcome, r.ContactID, r.At, r.Reason, r.CountedBy = o, contactID, at, reason, countedBy
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
		return r.At.Before(cutoff) && r.CountedBy != ""
	})
	for over := len(p.Events) - s.cfg.MaxEvents; over > 0; over-- {
		// The newest record is the one being written: it always stays.
		i := slices.IndexFunc(p.Events[:len(p.Events)-1], func(r ports.EventRecord) bool { return r.Terminal() && r.CountedBy != "" })
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
// when another worker wrote first, or the write's answer was lost, it reads
// the record again and applies the same change to what it finds, so
// nothing another worker wrote is lost and nothing is written twice.
// change reports false when there is nothing (more) to write. commit
// returns the record as written or found.
func (s *Service) commit(ctx context.Context, p *ports.Person, change func(q *ports.Person) bool) (ports.Person, error) {
	// The CRM write is done: the record must be written even if the
	// delivery's own deadline has passed.
	ctx = context.WithoutCancel(ctx)
	q := *p
	q.Events = slices.Clone(p.Events)
	var last error
	for range maxConflicts {
		if !change(&q) {
			return q, nil
		}
		err := s.put(ctx, &q)
		if err == nil {
			return q, nil
		}
		last = err
		if q, err = s.ledger.Person(ctx, p.Connection, p.Email); err != nil {
			return q, fmt.Errorf("record: %w (after %w)", err, last)
		}
	}
	return q, fmt.Errorf("record: gave up after %d tries: %w", maxConflicts, last)
}

// write writes p at the revision it was read at, for a decision made from
// that read. If the write's answer is lost it reads the record back, and
// landed tells from it whether the write happened.
func (s *Service) write(ctx context.Context, p *ports.Person, landed func(q *ports.Person) bool) error {
	err := s.put(ctx, p)
	if err == nil || errors.Is(err, ports.ErrConflict) {
		return err
	}
	q, rerr := s.ledger.Person(ctx, p.Connection, p.Email)
	if rerr == nil && landed(&q) {
		*p = q
		return nil
	}
	return err
}
