package app_test

import (
	"context"
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

// crmCall is one call to fakeCRM.
type crmCall struct {
	Event   string // the tag of the call's context
	Op      string // find, create, update
	Who     domain.Identity
	ID      string
	Contact domain.Contact
}

// String is the form tests compare: "find email:ada@example.com",
// "create lead ada@example.com", "update c1" (an update that carries a role
// shows it, which no update should).
func (c crmCall) String() string {
	switch c.Op {
	case "find":
		return "find " + c.Who.Key()
	case "create":
		return "create " + string(c.Contact.Role) + " " + c.Contact.Email
	case "update":
		if c.Contact.Role != "" {
			return "update " + c.ID + " WITH ROLE " + string(c.Contact.Role)
		}
		return "update " + c.ID
	}
	return c.Op
}

// fakeCRM is a CRM holding contacts in memory. Find matches by email or
// external id, Create adds a contact with ids c1, c2, ..., Update fails with
// NotFound for an unknown id. The hooks, when set before use, replace the
// default behaviour of one operation.
type fakeCRM struct {
	findHook   func(ctx context.Context, who domain.Identity) ([]domain.Match, error)
	createHook func(ctx context.Context, c domain.Contact) (ports.Created, error)
	updateHook func(ctx context.Context, id string, c domain.Contact) error

	mu       sync.Mutex
	calls    []crmCall
	contacts []domain.Match
	next     int
}

func newFakeCRM() *fakeCRM { return &fakeCRM{} }

func (f *fakeCRM) record(c crmCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

// seed adds existing contacts.
func (f *fakeCRM) seed(ms ...domain.Match) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.contacts = append(f.contacts, ms...)
}

// insert is Create's default: it stores the contact under a fresh id.
func (f *fakeCRM) insert(c domain.Contact) ports.Created {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	id := fmt.Sprintf("c%d", f.next)
	f.contacts = append(f.contacts, domain.Match{ID: id, Role: c.Role, Email: c.Email, ExternalID: c.ExternalID, CreatedAt: int64(f.next)})
	return ports.Created{ID: id}
}

func (f *fakeCRM) Find(ctx context.Context, who domain.Identity) ([]domain.Match, error) {
	f.record(crmCall{Event: tagOf(ctx), Op: "find", Who: who})
	if f.findHook != nil {
		return f.findHook(ctx, who)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []domain.Match
	for _, m := range f.contacts {
		if m.Email == who.Email || (who.ExternalID != "" && m.ExternalID == who.ExternalID) {
			out = append(out, m)
		}
	}
	return out, nil
}

func (f *fakeCRM) Create(ctx context.Context, c domain.Contact) (ports.Created, error) {
	f.record(crmCall{Event: tagOf(ctx), Op: "create", Contact: c})
	if f.createHook != nil {
		return f.createHook(ctx, c)
	}
	return f.insert(c), nil
}

func (f *fakeCRM) Update(ctx context.Context, id string, c domain.Contact) error {
	f.record(crmCall{Event: tagOf(ctx), Op: "update", ID: id, Contact: c})
	if f.updateHook != nil {
		return f.updateHook(ctx, id, c)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.contacts {
		if m.ID == id {
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

func (f *fakeCRM) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// fakeLedger is an in-memory ledger with revisioned claims.
type fakeLedger struct {
	mu          sync.Mutex
	entries     map[string]*ledgerEntry
	calls       []string
	claimErr    error // returned by every Claim when set
	completeErr error
	releaseErr  error
}

type ledgerEntry struct {
	held     bool
	revision uint64
	done     *ports.Record
	released int
}

func newFakeLedger() *fakeLedger { return &fakeLedger{entries: map[string]*ledgerEntry{}} }

func (l *fakeLedger) Claim(_ context.Context, key string) (ports.Claim, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "claim "+key)
	if l.claimErr != nil {
		return ports.Claim{}, l.claimErr
	}
	e, ok := l.entries[key]
	if !ok {
		e = &ledgerEntry{}
		l.entries[key] = e
	}
	if e.done != nil {
		r := *e.done
		return ports.Claim{Key: key, Revision: e.revision, Done: &r}, nil
	}
	if e.held {
		return ports.Claim{}, ports.ErrClaimHeld
	}
	e.held = true
	e.revision++
	return ports.Claim{Key: key, Revision: e.revision}, nil
}

func (l *fakeLedger) Complete(_ context.Context, c ports.Claim, r ports.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "complete "+c.Key)
	if l.completeErr != nil {
		return l.completeErr
	}
	e, ok := l.entries[c.Key]
	if !ok || !e.held || e.revision != c.Revision {
		return ports.ErrClaimLost
	}
	e.held = false
	e.done = &r
	return nil
}

func (l *fakeLedger) Release(_ context.Context, c ports.Claim) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "release "+c.Key)
	if l.releaseErr != nil {
		return l.releaseErr
	}
	e, ok := l.entries[c.Key]
	if !ok || !e.held || e.revision != c.Revision {
		return ports.ErrClaimLost
	}
	e.held = false
	e.released++
	return nil
}

// State describes every entry, sorted by key, as "done <outcome> <contact>",
// "held" or "released": "" when the ledger was never touched.
func (l *fakeLedger) State() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for key, e := range l.entries {
		var s string
		switch {
		case e.done != nil:
			s = fmt.Sprintf("done %s %s", e.done.Outcome, e.done.ContactID)
		case e.held:
			s = "held"
		case e.released > 0:
			s = "released"
		default:
			s = "untouched"
		}
		out = append(out, key+"="+s)
	}
	slices.Sort(out)
	// Keys are the service's business; tests compare what happened.
	for i, s := range out {
		out[i] = s[strings.LastIndexByte(s, '=')+1:]
	}
	return strings.Join(out, "; ")
}

// Calls returns the operations so far.
func (l *fakeLedger) Calls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// fakePeople remembers contact ids per connection and person. Remember with
// an empty id forgets.
type fakePeople struct {
	mu          sync.Mutex
	ids         map[string]string
	lookups     int
	contactErr  error
	rememberErr error
	emptyHit    bool // answer every lookup with ("", true): a forgetful adapter
}

func newFakePeople() *fakePeople { return &fakePeople{ids: map[string]string{}} }

func peopleKey(conn string, who domain.Identity) string { return conn + " " + who.Key() }

func (p *fakePeople) Contact(_ context.Context, conn string, who domain.Identity) (string, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lookups++
	if p.contactErr != nil {
		return "", false, p.contactErr
	}
	if p.emptyHit {
		return "", true, nil
	}
	id, ok := p.ids[peopleKey(conn, who)]
	return id, ok, nil
}

func (p *fakePeople) Remember(_ context.Context, conn string, who domain.Identity, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rememberErr != nil {
		return p.rememberErr
	}
	if id == "" {
		delete(p.ids, peopleKey(conn, who))
	} else {
		p.ids[peopleKey(conn, who)] = id
	}
	return nil
}

// set seeds a remembered person.
func (p *fakePeople) set(conn string, who domain.Identity, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids[peopleKey(conn, who)] = id
}

// Known returns the remembered id of a person.
func (p *fakePeople) Known(conn string, who domain.Identity) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.ids[peopleKey(conn, who)]
	return id, ok
}

func (p *fakePeople) resetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lookups = 0
}

func (p *fakePeople) Lookups() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lookups
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
// "campaign action outcome reason".
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
	return slices.Clone(m.processed)
}

func (m *fakeMetrics) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes, m.retries, m.processed = nil, nil, nil
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
