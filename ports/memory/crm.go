package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// CRM is an in-memory ports.CRM modelled on the documented behaviour of
// Intercom's contacts API, the strictest of the CRMs the service supports:
//   - a user is unique by email and by external id: creating one that
//     exists answers the existing user (Intercom's 409), even if search
//     does not show it yet; leads may share an email;
//   - Find matches by external id at once (a consistent lookup) and by
//     email and marker only SearchLag after the contact was stored, as
//     Intercom's search lags behind writes;
//   - a create is never sent once its context's deadline has passed by
//     Now (the adapter contract the exactly-once protocol relies on) or
//     its context is cancelled; a find or update is never sent once its
//     context is done;
//   - Update of an unknown contact is NotFound and never changes a
//     contact's role.
//
// Faults are injected per call through Fault. Time is Now, so a simulation
// can run it on a clock of its own.
type CRM struct {
	// Now is the CRM's clock; default time.Now.
	Now func() time.Time
	// SearchLag is how long after it is stored a contact is found by
	// email or marker.
	SearchLag time.Duration
	// Fault, when set, decides what goes wrong with a call.
	Fault func(c Call) Fault

	mu       sync.Mutex
	contacts []Contact
	late     []lateCreate
	calls    []Call
	next     int
}

// Call is one call made to the CRM.
type Call struct {
	Op      string // find, create, update
	Who     domain.Identity
	Contact domain.Contact
	ID      string
	At      time.Time
}

// Fault is what goes wrong with one call.
type Fault struct {
	// Err fails the call before it has any effect (a refused request, a
	// 5xx that did nothing, a rate limit).
	Err error
	// LoseResponse applies a write, then reports it failed, uncertain (a
	// timeout or a reset after the CRM committed it).
	LoseResponse bool
	// CommitAfter makes a create land only this long after it was sent,
	// while the client has given up (uncertain): a commit after the
	// client's deadline.
	CommitAfter time.Duration
}

// Contact is a stored contact.
type Contact struct {
	domain.Match
	Custom   map[string]any
	StoredAt time.Time
}

type lateCreate struct {
	c  domain.Contact
	at time.Time
}

func (m *CRM) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Seed stores existing contacts, searchable at once.
func (m *CRM) Seed(ms ...domain.Match) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range ms {
		m.contacts = append(m.contacts, Contact{Match: c})
	}
}

// Delete removes a contact, as a merge or a deletion in the CRM would.
func (m *CRM) Delete(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.contacts = slices.DeleteFunc(m.contacts, func(c Contact) bool { return c.ID == id })
}

// land stores the creates whose commit time has come; m.mu is held.
func (m *CRM) land(now time.Time) {
	keep := m.late[:0]
	for _, l := range m.late {
		if l.at.After(now) {
			keep = append(keep, l)
			continue
		}
		m.store(l.c, l.at)
	}
	m.late = keep
}

// store applies a create; m.mu is held.
func (m *CRM) store(c domain.Contact, at time.Time) ports.Created {
	if c.Role == domain.RoleUser {
		for _, s := range m.contacts {
			if s.Role == domain.RoleUser && (s.Email == c.Email || (c.ExternalID != "" && s.ExternalID == c.ExternalID)) {
				return ports.Created{ID: s.ID, Existing: true}
			}
		}
	}
	m.next++
	id := fmt.Sprintf("c%d", m.next)
	m.contacts = append(m.contacts, Contact{
		Match: domain.Match{ID: id, Role: c.Role, Email: c.Email, ExternalID: c.ExternalID,
			CreatedAt: at.Unix(), Marker: c.Marker},
		Custom:   maps.Clone(c.Custom), // the caller's map is not the CRM's to change
		StoredAt: at,
	})
	return ports.Created{ID: id}
}

func (m *CRM) fault(c Call) Fault {
	if m.Fault == nil {
		return Fault{}
	}
	return m.Fault(c)
}

func (m *CRM) call(c Call) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, c)
}

// Find implements ports.CRM.
func (m *CRM) Find(ctx context.Context, who domain.Identity) ([]domain.Match, error) {
	now := m.now()
	c := Call{Op: "find", Who: who, At: now}
	if err := ctx.Err(); err != nil {
		return nil, &ports.Error{Op: "search", Kind: ports.Transient, Err: err} // never sent
	}
	if who.Email == "" && who.ExternalID == "" && who.Marker == "" {
		// An empty answer would invite a blind create.
		return nil, &ports.Error{Op: "search", Kind: ports.Permanent, Message: "identity has neither email, external id nor marker"}
	}
	m.call(c)
	if f := m.fault(c); f.Err != nil {
		return nil, f.Err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.land(now)
	var out []domain.Match
	for _, s := range m.contacts {
		searchable := !now.Before(s.StoredAt.Add(m.SearchLag))
		byXID := who.ExternalID != "" && s.ExternalID == who.ExternalID
		byEmail := who.Email != "" && s.Email == who.Email && searchable
		byMarker := who.Marker != "" && s.Marker == who.Marker && searchable
		if byXID || byEmail || byMarker {
			out = append(out, s.Match)
		}
	}
	return out, nil
}

// Create implements ports.CRM.
func (m *CRM) Create(ctx context.Context, c domain.Contact) (ports.Created, error) {
	now := m.now()
	call := Call{Op: "create", Contact: c, At: now}
	// Deadlines are judged by the CRM's clock, Now, so that a simulation's
	// clock governs them; a cancellation stops the create whatever the
	// clock says.
	if d, ok := ctx.Deadline(); ok && !now.Before(d) {
		// Never sent: the deadline has passed.
		return ports.Created{}, &ports.Error{Op: "create", Kind: ports.Transient, Message: "deadline passed; request not sent",
			Err: context.DeadlineExceeded}
	}
	if err := ctx.Err(); errors.Is(err, context.Canceled) {
		return ports.Created{}, &ports.Error{Op: "create", Kind: ports.Transient, Message: "cancelled; request not sent", Err: err}
	}
	m.call(call)
	f := m.fault(call)
	if f.Err != nil {
		return ports.Created{}, f.Err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.land(now)
	if f.CommitAfter > 0 {
		m.late = append(m.late, lateCreate{c: c, at: now.Add(f.CommitAfter)})
		return ports.Created{}, uncertain("create", context.DeadlineExceeded)
	}
	res := m.store(c, now)
	if f.LoseResponse {
		return ports.Created{}, uncertain("create", errors.New("connection reset after the request was sent"))
	}
	return res, nil
}

// Update implements ports.CRM.
func (m *CRM) Update(ctx context.Context, id string, c domain.Contact) error {
	now := m.now()
	call := Call{Op: "update", ID: id, Contact: c, At: now}
	if err := ctx.Err(); err != nil {
		return &ports.Error{Op: "update", Kind: ports.Transient, Err: err} // never sent
	}
	m.call(call)
	if f := m.fault(call); f.Err != nil {
		return f.Err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.land(now)
	i := slices.IndexFunc(m.contacts, func(s Contact) bool { return s.ID == id })
	if i < 0 {
		return &ports.Error{Op: "update", Kind: ports.NotFound, Status: 404, Message: "contact not found"}
	}
	if m.contacts[i].Custom == nil {
		m.contacts[i].Custom = map[string]any{}
	}
	for k, v := range c.Custom {
		m.contacts[i].Custom[k] = v
	}
	if c.ExternalID != "" && m.contacts[i].ExternalID == "" {
		m.contacts[i].ExternalID = c.ExternalID
	}
	if f := m.fault(Call{Op: "update-response", ID: id, At: now}); f.LoseResponse {
		return uncertain("update", errors.New("connection reset after the request was sent"))
	}
	return nil
}

func uncertain(op string, err error) error {
	return &ports.Error{Op: op, Kind: ports.Transient, Uncertain: true, Err: err}
}

// Contacts returns every stored contact (after landing the creates whose
// time has come), in creation order. The result is a copy: later updates
// do not show in it.
func (m *CRM) Contacts() []Contact {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.land(m.now())
	out := slices.Clone(m.contacts)
	for i := range out {
		out[i].Custom = maps.Clone(out[i].Custom)
	}
	return out
}

// Settle lands every create still on its way, whatever its time: the
// final state a checker compares.
func (m *CRM) Settle() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.late {
		m.store(l.c, l.at)
	}
	m.late = nil
}

// Calls returns the calls made so far.
func (m *CRM) Calls() []Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// Reset forgets the calls so far; contacts stay.
func (m *CRM) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = nil
}
