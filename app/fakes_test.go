package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Hand-written, in-memory fakes of the ports. Each is safe for concurrent
// use and records the calls it receives, so tests assert on effects rather
// than on the service's internals.

// eventTag labels a context with the name of the test event it carries, so
// fakes can attribute calls to events in concurrent tests.
type eventTag struct{}

func tagged(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, eventTag{}, name)
}

func tagOf(ctx context.Context) string {
	s, _ := ctx.Value(eventTag{}).(string)
	return s
}

// clock is the one time source of a harness: the service's Now, the
// people's leases and the CRM's search lag all read it, and only tests move
// it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// crmCall is one call to fakeCRM.
type crmCall struct {
	Event   string // the tag of the call's context
	Op      string // find, create, update
	Who     domain.Identity
	ID      string
	Contact domain.Contact
}

// String is the form tests compare: "find email:ada@example.com",
// "find email:ada@example.com marker:evt-1", "create lead ada@example.com",
// "update c1" (an update that carries a role shows it, which no update
// should).
func (c crmCall) String() string {
	switch c.Op {
	case "find":
		s := "find " + c.Who.Key()
		if c.Who.Marker != "" {
			s += " marker:" + c.Who.Marker
		}
		return s
	case "create":
		return "create " + string(c.Contact.Role) + " " + c.Contact.Email
	case "update":
		// The marker is for creates only; like the Intercom adapter,
		// updates ignore it.
		s := "update " + c.ID
		if c.Contact.Role != "" {
			s += " WITH ROLE " + string(c.Contact.Role)
		}
		return s
	}
	return c.Op
}

// createFault is what fakeCRM does with one Create call.
type createFault int

const (
	// createLostBefore fails uncertainly without applying the create: the
	// request never reached the CRM, but the caller cannot know.
	createLostBefore createFault = iota + 1
	// createLostAfter applies the create and then fails uncertainly: the
	// response was lost.
	createLostAfter
)

// uncertainCreate is the error of a create whose outcome is unknown.
func uncertainCreate() error {
	return &ports.Error{Op: "create", Kind: ports.Transient, Uncertain: true,
		Err: errors.New("read tcp 10.0.0.7:443: connection reset by peer")}
}

// storedContact is a contact in fakeCRM.
type storedContact struct {
	domain.Match
	searchable time.Time // when a search by email or marker first finds it
}

// fakeCRM is a CRM holding contacts in memory, modelled on Intercom:
//   - Find matches by external id at once, and by email and by marker
//     (Identity.Marker against Contact.Marker) only searchLag after the
//     contact was created, as Intercom's search lags behind creates;
//     seeded contacts are searchable at once.
//   - Create adds a contact with ids c1, c2, ... carrying its marker; a
//     user whose external id or email belongs to an existing user is
//     refused as Intercom's 409 does, answered Existing with that user's
//     id, however recent it is.
//   - Update fails with NotFound for an unknown id.
//
// Faults queued with failCreates apply to the next Create calls, one each.
// The hooks, when set before use, replace the default behaviour of one
// operation; a create hook can call create for the default.
type fakeCRM struct {
	findHook   func(ctx context.Context, who domain.Identity) ([]domain.Match, error)
	createHook func(ctx context.Context, c domain.Contact) (ports.Created, error)
	updateHook func(ctx context.Context, id string, c domain.Contact) error

	clock *clock

	mu        sync.Mutex
	searchLag time.Duration
	faults    []createFault
	calls     []crmCall
	contacts  []storedContact
	next      int
}

func newFakeCRM(c *clock) *fakeCRM { return &fakeCRM{clock: c} }

func (f *fakeCRM) record(c crmCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

// seed adds existing contacts, searchable at once.
func (f *fakeCRM) seed(ms ...domain.Match) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range ms {
		f.contacts = append(f.contacts, storedContact{Match: m})
	}
}

// setSearchLag makes contacts created from now on searchable by email and
// marker only d after their creation.
func (f *fakeCRM) setSearchLag(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.searchLag = d
}

// failCreates queues faults for the next Create calls, one each.
func (f *fakeCRM) failCreates(faults ...createFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, faults...)
}

// create is Create's default: apply the next queued fault, refuse a
// duplicate user, or store the contact under a fresh id.
func (f *fakeCRM) create(c domain.Contact) (ports.Created, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var fault createFault
	if len(f.faults) > 0 {
		fault, f.faults = f.faults[0], f.faults[1:]
	}
	if fault == createLostBefore {
		return ports.Created{}, uncertainCreate()
	}
	res := f.apply(c)
	if fault == createLostAfter {
		return ports.Created{}, uncertainCreate()
	}
	return res, nil
}

// apply stores the contact; f.mu is held.
func (f *fakeCRM) apply(c domain.Contact) ports.Created {
	if c.Role == domain.RoleUser {
		for _, s := range f.contacts {
			if s.Role == domain.RoleUser && (s.Email == c.Email || (c.ExternalID != "" && s.ExternalID == c.ExternalID)) {
				return ports.Created{ID: s.ID, Existing: true} // Intercom's 409
			}
		}
	}
	f.next++
	id := fmt.Sprintf("c%d", f.next)
	var at time.Time
	if f.clock != nil {
		at = f.clock.Now().Add(f.searchLag)
	}
	f.contacts = append(f.contacts, storedContact{
		Match: domain.Match{ID: id, Role: c.Role, Email: c.Email, ExternalID: c.ExternalID,
			CreatedAt: int64(f.next), Marker: c.Marker},
		searchable: at,
	})
	return ports.Created{ID: id}
}

func (f *fakeCRM) Find(ctx context.Context, who domain.Identity) ([]domain.Match, error) {
	f.record(crmCall{Event: tagOf(ctx), Op: "find", Who: who})
	if f.findHook != nil {
		return f.findHook(ctx, who)
	}
	var now time.Time
	if f.clock != nil {
		now = f.clock.Now()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []domain.Match
	for _, s := range f.contacts {
		searchable := !now.Before(s.searchable)
		byXID := who.ExternalID != "" && s.ExternalID == who.ExternalID
		byEmail := who.Email != "" && s.Email == who.Email && searchable
		byMarker := who.Marker != "" && s.Marker == who.Marker && searchable
		if byXID || byEmail || byMarker {
			out = append(out, s.Match)
		}
	}
	return out, nil
}

func (f *fakeCRM) Create(ctx context.Context, c domain.Contact) (ports.Created, error) {
	f.record(crmCall{Event: tagOf(ctx), Op: "create", Contact: c})
	if f.createHook != nil {
		return f.createHook(ctx, c)
	}
	return f.create(c)
}

func (f *fakeCRM) Update(ctx context.Context, id string, c domain.Contact) error {
	f.record(crmCall{Event: tagOf(ctx), Op: "update", ID: id, Contact: c})
	if f.updateHook != nil {
		return f.updateHook(ctx, id, c)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.contacts {
		if s.ID == id {
			return nil
		}
	}
	return &ports.Error{Op: "update", Kind: ports.NotFound, Status: 404}
}

// Calls returns the calls so far as strings, optionally only those of one
// event.
func (f *fakeCRM) Calls(event string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if event == "" || c.Event == event {
			out = append(out, c.String())
		}
	}
	return out
}

// RawCalls returns the calls so far.
func (f *fakeCRM) RawCalls() []crmCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Contacts describes every stored contact, in creation order, as
// "c1 lead ada@example.com" with " xid=..." and " marker=..." when set.
func (f *fakeCRM) Contacts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.contacts {
		d := s.ID + " " + string(s.Role) + " " + s.Email
		if s.ExternalID != "" {
			d += " xid=" + s.ExternalID
		}
		if s.Marker != "" {
			d += " marker=" + s.Marker
		}
		out = append(out, d)
	}
	return out
}

// reset forgets the calls so far; contacts stay.
func (f *fakeCRM) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// fakeLedger is an in-memory ledger of event records. The err fields, set
// before use, make every call of one operation fail.
type fakeLedger struct {
	mu        sync.Mutex
	records   map[string]ports.EventRecord
	calls     []string
	eventErr  error
	doneErr   error
	failedErr error
	clearErr  error
}

func newFakeLedger() *fakeLedger { return &fakeLedger{records: map[string]ports.EventRecord{}} }

func (l *fakeLedger) setErrs(event, done, failed, clear error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.eventErr, l.doneErr, l.failedErr, l.clearErr = event, done, failed, clear
}

// copyRecord keeps the ledger's records and its callers' apart.
func copyRecord(r ports.EventRecord) ports.EventRecord {
	if r.Done != nil {
		d := *r.Done
		r.Done = &d
	}
	return r
}

func (l *fakeLedger) Event(_ context.Context, key string) (ports.EventRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "event "+key)
	if l.eventErr != nil {
		return ports.EventRecord{}, l.eventErr
	}
	return copyRecord(l.records[key]), nil
}

func (l *fakeLedger) Done(_ context.Context, key string, r ports.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf("done %s %s %s", key, r.Outcome, r.ContactID))
	if l.doneErr != nil {
		return l.doneErr
	}
	// Like the KV adapter, a done record replaces the failure count.
	l.records[key] = ports.EventRecord{Done: &r}
	return nil
}

func (l *fakeLedger) Failed(_ context.Context, key string, at time.Time) (ports.EventRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "failed "+key)
	if l.failedErr != nil {
		return ports.EventRecord{}, l.failedErr
	}
	r := l.records[key]
	r.Failures++
	if r.FirstFailure.IsZero() {
		r.FirstFailure = at
	}
	l.records[key] = r
	return copyRecord(r), nil
}

func (l *fakeLedger) Clear(_ context.Context, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "clear "+key)
	if l.clearErr != nil {
		return l.clearErr
	}
	// Like the KV adapter: failures are forgotten, an applied event never.
	if l.records[key].Done == nil {
		delete(l.records, key)
	}
	return nil
}

// reset forgets the calls so far; records stay.
func (l *fakeLedger) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = nil
}

// seed stores a record.
func (l *fakeLedger) seed(key string, r ports.EventRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records[key] = copyRecord(r)
}

// State describes every record, sorted by key, as
// "intercom/evt-1: done created c1" or
// "intercom/evt-1: failures=2 first=10:00:05"; "" when there is none.
func (l *fakeLedger) State() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for key, r := range l.records {
		var parts []string
		if r.Done != nil {
			parts = append(parts, fmt.Sprintf("done %s %s", r.Done.Outcome, r.Done.ContactID))
		}
		if r.Failures > 0 || !r.FirstFailure.IsZero() {
			parts = append(parts, fmt.Sprintf("failures=%d first=%s", r.Failures, r.FirstFailure.Format("15:04:05")))
		}
		out = append(out, key+": "+strings.Join(parts, " "))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// Calls returns the operations so far, optionally only those whose key
// is key.
func (l *fakeLedger) Calls(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, c := range l.calls {
		if key == "" || strings.HasSuffix(c, " "+key) || strings.Contains(c, " "+key+" ") {
			out = append(out, c)
		}
	}
	return out
}

// personRecord is one person in fakePeople.
type personRecord struct {
	contactID string
	createdBy string
	pending   *ports.PendingCreate
	revision  uint64
	owner     string // the lock holder; "" when unlocked
	leaseEnd  time.Time
}

// fakePeople is an in-memory People modelled on the KV adapter: a lock is
// an owner and a lease on the person's record, taken when the record is
// unlocked or its lease has ended (ErrClaimHeld otherwise); every write
// bumps the revision, and Save and Unlock are compare-and-set on the
// revision the holder last saw (ErrClaimLost when the lock was taken over).
// The err fields, set before use, make every call of one operation fail;
// onLock, when set, runs inside Lock once the lock is taken, standing in
// for whatever another worker does at that moment.
type fakePeople struct {
	clock  *clock
	lease  time.Duration
	onLock func(key string)

	mu        sync.Mutex
	changed   *sync.Cond // broadcast on every unlock
	records   map[string]*personRecord
	calls     []string
	owners    int
	lockErr   error
	saveErr   error
	unlockErr error
}

const lease = 2 * time.Minute

func newFakePeople(c *clock) *fakePeople {
	p := &fakePeople{clock: c, lease: lease, records: map[string]*personRecord{}}
	p.changed = sync.NewCond(&p.mu)
	return p
}

func personKey(conn, email string) string { return conn + "/" + email }

func clonePending(p *ports.PendingCreate) *ports.PendingCreate {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// describePerson is the form calls and State use: "contact=c1",
// "pending=evt-1", both, or "empty".
func describePerson(contactID string, pending *ports.PendingCreate) string {
	var parts []string
	if contactID != "" {
		parts = append(parts, "contact="+contactID)
	}
	if pending != nil {
		parts = append(parts, "pending="+pending.EventID)
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, " ")
}

// held reports whether r is locked with a live lease; p.mu is held.
func (p *fakePeople) held(r *personRecord) bool {
	return r.owner != "" && p.clock.Now().Before(r.leaseEnd)
}

func (p *fakePeople) Lock(_ context.Context, conn, email string) (ports.Person, error) {
	key := personKey(conn, email)
	person, err := p.lock(key, true)
	if err == nil && p.onLock != nil {
		p.onLock(key)
	}
	return person, err
}

// lock takes the lock, recording the call unless another worker (the
// test) takes it.
func (p *fakePeople) lock(key string, record bool) (ports.Person, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if record {
		p.calls = append(p.calls, "lock "+key)
	}
	if p.lockErr != nil {
		return ports.Person{}, p.lockErr
	}
	r, ok := p.records[key]
	if !ok {
		r = &personRecord{}
		p.records[key] = r
	}
	if p.held(r) {
		return ports.Person{}, ports.ErrClaimHeld
	}
	p.owners++
	r.revision++
	r.owner = fmt.Sprintf("w%d", p.owners)
	r.leaseEnd = p.clock.Now().Add(p.lease)
	return ports.Person{Key: key, Revision: r.revision, ContactID: r.contactID, CreatedBy: r.createdBy, Pending: clonePending(r.pending)}, nil
}

func (p *fakePeople) Save(_ context.Context, person *ports.Person) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "save "+person.Key+" "+describePerson(person.ContactID, person.Pending))
	if p.saveErr != nil {
		return p.saveErr
	}
	r, ok := p.records[person.Key]
	if !ok || r.owner == "" || r.revision != person.Revision {
		return ports.ErrClaimLost
	}
	r.revision++
	r.contactID, r.createdBy, r.pending = person.ContactID, person.CreatedBy, clonePending(person.Pending)
	r.leaseEnd = p.clock.Now().Add(p.lease)
	person.Revision = r.revision
	return nil
}

func (p *fakePeople) Unlock(_ context.Context, person ports.Person) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "unlock "+person.Key+" "+describePerson(person.ContactID, person.Pending))
	if p.unlockErr != nil {
		return p.unlockErr
	}
	r, ok := p.records[person.Key]
	if !ok || r.owner == "" || r.revision != person.Revision {
		return ports.ErrClaimLost
	}
	r.revision++
	r.contactID, r.createdBy, r.pending = person.ContactID, person.CreatedBy, clonePending(person.Pending)
	r.owner, r.leaseEnd = "", time.Time{}
	p.changed.Broadcast()
	return nil
}

// seed stores a person, unlocked.
func (p *fakePeople) seed(conn, email, contactID string, pending *ports.PendingCreate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records[personKey(conn, email)] = &personRecord{contactID: contactID, pending: clonePending(pending), revision: 1}
}

// hold takes the person's lock as another worker would; the call is not
// recorded. It panics if the lock is held.
func (p *fakePeople) hold(conn, email string) {
	if _, err := p.lock(personKey(conn, email), false); err != nil {
		panic("hold: " + err.Error())
	}
}

// release ends the lock of whoever holds it, as its holder finishing
// would, leaving the person's state as it is.
func (p *fakePeople) release(conn, email string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.records[personKey(conn, email)]; ok {
		r.revision++
		r.owner, r.leaseEnd = "", time.Time{}
		p.changed.Broadcast()
	}
}

// waitUnlocked blocks until the person is not locked with a live lease.
func (p *fakePeople) waitUnlocked(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		r, ok := p.records[key]
		if !ok || !p.held(r) {
			return
		}
		p.changed.Wait()
	}
}

// State describes every person, sorted by key, as
// "intercom/ada@example.com: contact=c1" with " pending=evt-1" when a
// create is pending and " locked" while a lock is held; "" when there is
// none.
func (p *fakePeople) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for key, r := range p.records {
		s := key + ": " + describePerson(r.contactID, r.pending)
		if r.owner != "" {
			s += " locked"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// Person returns the stored state of one person.
func (p *fakePeople) Person(conn, email string) (contactID string, pending *ports.PendingCreate, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.records[personKey(conn, email)]
	if !ok {
		return "", nil, false
	}
	return r.contactID, clonePending(r.pending), true
}

// Calls returns the operations so far.
func (p *fakePeople) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// Locks counts the Lock calls so far.
func (p *fakePeople) Locks() int {
	n := 0
	for _, c := range p.Calls() {
		if strings.HasPrefix(c, "lock ") {
			n++
		}
	}
	return n
}

func (p *fakePeople) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = nil
}

// fakeDLQ records dead letters, or fails with err.
type fakeDLQ struct {
	mu      sync.Mutex
	letters []ports.DeadLetter
	err     error
}

func (d *fakeDLQ) DeadLetter(_ context.Context, l ports.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	d.letters = append(d.letters, l)
	return nil
}

func (d *fakeDLQ) Letters() []ports.DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.letters)
}

// Reasons returns the reasons of the dead letters so far.
func (d *fakeDLQ) Reasons() []string {
	var out []string
	for _, l := range d.Letters() {
		out = append(out, l.Reason)
	}
	return out
}

// outcomeCall is one Metrics.Outcome call, printed as
// "campaign|action|outcome|reason".
type outcomeCall struct {
	Campaign string
	Action   domain.Action
	Outcome  domain.Outcome
	Reason   string
}

func (o outcomeCall) String() string {
	return strings.Join([]string{o.Campaign, string(o.Action), string(o.Outcome), o.Reason}, "|")
}

type fakeMetrics struct {
	mu        sync.Mutex
	outcomes  []outcomeCall
	retries   []string // "campaign|kind"
	processed []time.Duration
	ages      []time.Duration
}

func (m *fakeMetrics) Outcome(campaign string, action domain.Action, outcome domain.Outcome, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes = append(m.outcomes, outcomeCall{campaign, action, outcome, reason})
}

func (m *fakeMetrics) Retry(campaign, kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retries = append(m.retries, campaign+"|"+kind)
}

func (m *fakeMetrics) Processed(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.processed = append(m.processed, d)
}

func (m *fakeMetrics) EventAge(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ages = append(m.ages, d)
}

func (m *fakeMetrics) Outcomes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, o := range m.outcomes {
		out = append(out, o.String())
	}
	return out
}

func (m *fakeMetrics) Retries() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.retries)
}

func (m *fakeMetrics) Durations() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.ages)
}

func (m *fakeMetrics) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes, m.retries, m.processed, m.ages = nil, nil, nil, nil
}

// logRecorder is a slog.Handler keeping every record.
type logRecorder struct {
	mu      sync.Mutex
	records []logRecord
}

type logRecord struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, logRecord{rec.Level, rec.Message, attrs})
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// Matching returns the records whose message contains s.
func (r *logRecorder) Matching(s string) []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logRecord
	for _, rec := range r.records {
		if strings.Contains(rec.Message, s) {
			out = append(out, rec)
		}
	}
	return out
}
