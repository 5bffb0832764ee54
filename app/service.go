// Package app is referrer-sync's one use case: handle a referrer.joined
// message. It orchestrates the domain's decisions and the ports' effects,
// and classifies every failure as "try again later" or "never": it imports
// only the domain, the ports and the standard library.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Dead-letter reasons the application adds to the domain's invalid-event
// reasons.
const (
	ReasonCRMRejected       = "crm_rejected"       // the CRM answered 400/422 for this event
	ReasonUnauthorized      = "unauthorized"       // the CRM refused the token, until attempts ran out
	ReasonAttemptsExhausted = "attempts_exhausted" // transient failures until attempts ran out
)

// Campaign label values for messages that have no configured campaign, so
// metric labels stay bounded by the configuration.
const (
	LabelUnconfigured = "_unconfigured"
	LabelUnknown      = "_unknown"
)

// Config holds the application's dependencies and settings.
type Config struct {
	Catalog     *domain.Catalog
	CRMs        map[string]ports.CRM // by connection name
	Ledger      ports.Ledger
	People      ports.People
	DeadLetters ports.DeadLetters
	Metrics     ports.Metrics
	Logger      *slog.Logger
	// MaxAttempts caps the failed attempts of one event, counted in the
	// ledger across deliveries and replicas; an event still failing
	// transiently at the cap is dead-lettered. Default 5.
	MaxAttempts int
	// SearchLags is, per connection, how long after a create the CRM's
	// search may still miss the contact (DefaultSearchLag when unset).
	SearchLags map[string]time.Duration
	Now        func() time.Time // for tests; default time.Now
}

// Validate reports every missing dependency at once.
func (c Config) Validate() error {
	var errs []error
	if c.Catalog == nil {
		errs = append(errs, errors.New("app: Catalog is required"))
	}
	if c.Ledger == nil {
		errs = append(errs, errors.New("app: Ledger is required"))
	}
	if c.People == nil {
		errs = append(errs, errors.New("app: People is required"))
	}
	if c.DeadLetters == nil {
		errs = append(errs, errors.New("app: DeadLetters is required"))
	}
	if c.Metrics == nil {
		errs = append(errs, errors.New("app: Metrics is required"))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("app: MaxAttempts %d is negative", c.MaxAttempts))
	}
	if c.Catalog != nil {
		names := make([]string, 0, len(c.Catalog.Campaigns))
		for name := range c.Catalog.Campaigns {
			names = append(names, name)
		}
		slices.Sort(names) // one order, so a report can be compared and diffed
		for _, name := range names {
			if cp := c.Catalog.Campaigns[name]; cp.Action != domain.ActionNothing && c.CRMs[cp.Connection] == nil {
				errs = append(errs, fmt.Errorf("app: campaign %s uses connection %q, which has no CRM", name, cp.Connection))
			}
		}
		if cp := c.Catalog.Default; cp != nil && cp.Action != domain.ActionNothing && c.CRMs[cp.Connection] == nil {
			errs = append(errs, fmt.Errorf("app: default_campaign uses connection %q, which has no CRM", cp.Connection))
		}
	}
	return errors.Join(errs...)
}

// Service handles referrer.joined messages. It is safe for concurrent use.
type Service struct {
	catalog      atomic.Pointer[domain.Catalog]
	crms         map[string]ports.CRM
	ledger       ports.Ledger
	people       ports.People
	dlq          ports.DeadLetters
	metrics      ports.Metrics
	log          *slog.Logger
	maxAttempts  int
	searchLags   map[string]time.Duration
	now          func() time.Time
	locks        *keyLocks
	unconfigured sync.Map // campaign id → struct{}: log once per campaign
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		crms:        cfg.CRMs,
		ledger:      cfg.Ledger,
		people:      cfg.People,
		dlq:         cfg.DeadLetters,
		metrics:     cfg.Metrics,
		log:         cfg.Logger,
		maxAttempts: cfg.MaxAttempts,
		searchLags:  cfg.SearchLags,
		now:         cfg.Now,
		locks:       newKeyLocks(),
	}
	s.catalog.Store(cfg.Catalog)
	return s, nil
}

// SetCatalog swaps the campaign settings atomically: each message sees one
// whole version, old or new.
func (s *Service) SetCatalog(c *domain.Catalog) { s.catalog.Store(c) }

// Message is one delivery of a message from the bus.
type Message struct {
	Body     []byte
	Headers  map[string]string // lower-case names
	Subject  string
	Sequence uint64    // stream sequence
	Attempt  int       // 1 for the first delivery
	Received time.Time // when this delivery arrived
	// Published is when the message entered the stream; it stands in for
	// the event's own time when the event carries none.
	Published time.Time
}

// Verdict is how a delivery ended: either Settled with one final Outcome
// (the message is acknowledged) or sent back to be retried later.
type Verdict struct {
	Outcome  domain.Outcome // set when settled
	Retry    bool
	EventID  string // empty when the message could not be decoded
	Campaign string
	Reason   string // dead-letter reason or retry cause
	// Delay, when set on a retry, is the earliest useful redelivery (for
	// example when a CRM's rate-limit window resets).
	Delay     time.Duration
	ContactID string
	Err       error // the failure behind a retry or dead letter

	failures     int // failed attempts recorded in the ledger, with this one
	firstFailure time.Time
	wait         bool // a retry that is a wait (search lag), not a failure
}

// DeliveriesPerAttempt bounds deliveries per allowed failed attempt: waits
// (person busy, search lag) redeliver without failing, but not forever.
const DeliveriesPerAttempt = 20

// DefaultSearchLag is how long after a create the CRM's search may miss the
// new contact, when the connection does not say. Intercom documents "a few
// minutes".
const DefaultSearchLag = 5 * time.Minute

// Handle processes one delivery. It never returns an unclassified failure:
// the verdict says whether to acknowledge or to retry, and every settled
// verdict has been counted exactly once.
func (s *Service) Handle(ctx context.Context, m Message) Verdict {
	ev, v := s.handle(ctx, m)
	v.EventID, v.Campaign = ev.ID, ev.CampaignID
	return v
}

func (s *Service) handle(ctx context.Context, m Message) (ev domain.ReferrerJoined, _ Verdict) {
	start := s.now()
	ev, err := domain.DecodeEvent(m.Body, m.Headers)
	if err != nil {
		var inv *domain.InvalidEventError
		errors.As(err, &inv)
		return ev, s.deadLetter(ctx, m, ev, LabelUnknown, "", inv.Reason, err, time.Time{})
	}
	// Load the catalog once: a concurrent SetCatalog must not give this
	// message settings from one version and labels from another.
	catalog := s.catalog.Load()
	camp, ok := catalog.Lookup(ev.CampaignID)
	if !ok {
		if _, seen := s.unconfigured.LoadOrStore(ev.CampaignID, struct{}{}); !seen {
			s.log.WarnContext(ctx, "campaign is not configured and there is no default_campaign; its events are acknowledged and counted",
				"campaign", ev.CampaignID)
		}
		return ev, s.settle(ctx, m, ev, LabelUnconfigured, "", Verdict{Outcome: domain.OutcomeUnconfigured}, start)
	}
	label := ev.CampaignID
	if _, listed := catalog.Campaigns[ev.CampaignID]; !listed {
		label = LabelUnconfigured // default_campaign: keep labels bounded by the file
	}
	if camp.Action == domain.ActionNothing {
		return ev, s.settle(ctx, m, ev, label, camp.Action, Verdict{Outcome: domain.OutcomeNothing}, start)
	}
	contact, err := domain.MapContact(camp, ev)
	if err != nil {
		return ev, s.deadLetter(ctx, m, ev, label, camp.Action, domain.ReasonMapping, err, time.Time{})
	}

	v := s.apply(ctx, camp, ev, contact)
	if !v.Retry {
		if v.Outcome == domain.OutcomeDeadLettered {
			return ev, s.deadLetter(ctx, m, ev, label, camp.Action, v.Reason, v.Err, v.firstFailure)
		}
		return ev, s.settle(ctx, m, ev, label, camp.Action, v, start)
	}
	// Failed attempts are counted per event in the ledger, across
	// deliveries and replicas; waiting for another worker or for search
	// lag is not a failure. Deliveries are a backstop for failures the
	// ledger could not record.
	if v.failures >= s.maxAttempts || m.Attempt >= s.maxAttempts*DeliveriesPerAttempt {
		reason := ReasonAttemptsExhausted
		if ports.KindOf(v.Err) == ports.Unauthorized {
			reason = ReasonUnauthorized
		}
		dv := s.deadLetter(ctx, m, ev, label, camp.Action, reason,
			fmt.Errorf("gave up after %d failed attempts (%d deliveries): %w", v.failures, m.Attempt, v.Err), v.firstFailure)
		if !dv.Retry {
			// A replay after an operator's fix starts with no failures.
			if err := s.ledger.Clear(context.WithoutCancel(ctx), camp.Connection+"/"+ev.ID); err != nil {
				s.log.WarnContext(ctx, "clearing the event's failures failed", "event_id", ev.ID, "error", err)
			}
		}
		return ev, dv
	}
	s.metrics.Retry(label, v.Reason)
	s.log.InfoContext(ctx, "event will be retried", "event_id", ev.ID, "campaign", ev.CampaignID,
		"attempt", m.Attempt, "cause", v.Reason, "error", v.Err)
	return ev, v
}

// apply runs the exactly-once section for one event: lock the person,
// check the ledger, decide against what is known of the person and the
// CRM's current state, write, and record — all under the person's lock, so
// no other worker or replica acts on the same person meanwhile.
func (s *Service) apply(ctx context.Context, camp domain.Campaign, ev domain.ReferrerJoined, contact domain.Contact) Verdict {
	if s.crms[camp.Connection] == nil {
		// A catalog swapped in by SetCatalog can name a connection this
		// process has no CRM for. That is an operator's mistake, not the
		// event's: retry, so a corrected catalog still applies it.
		return Verdict{Retry: true, Reason: "no_crm", Err: fmt.Errorf("connection %q has no CRM", camp.Connection)}
	}
	conn, key := camp.Connection, camp.Connection+"/"+ev.ID
	// Inside one process, wait for the person's turn rather than bounce
	// the message through the broker.
	unlock, err := s.locks.lock(ctx, conn+"/"+contact.Email)
	if err != nil {
		return Verdict{Retry: true, Reason: "cancelled", Err: err}
	}
	defer unlock()

	// A duplicate delivery of an applied event costs one read.
	rec, err := s.ledger.Event(ctx, key)
	if err != nil {
		return Verdict{Retry: true, Reason: "ledger", Err: err}
	}
	if rec.Done != nil {
		return Verdict{Outcome: domain.OutcomeDuplicate, ContactID: rec.Done.ContactID}
	}
	person, err := s.people.Lock(ctx, conn, contact.Email)
	if errors.Is(err, ports.ErrClaimHeld) {
		return Verdict{Retry: true, Reason: "person_busy", Err: err, Delay: s.jitter(500 * time.Millisecond)}
	}
	if err != nil {
		return Verdict{Retry: true, Reason: "ledger", Err: err}
	}
	// From here on, writes must land even if the delivery's context ends:
	// a CRM write may already have happened.
	wctx := context.WithoutCancel(ctx)
	defer func() {
		if err := s.people.Unlock(wctx, person); err != nil {
			s.log.WarnContext(ctx, "unlocking the person failed; the lock expires with its lease", "connection", conn, "error", err)
		}
	}()
	// Re-read under the lock: another worker may have finished the event
	// between the first read and the lock.
	if rec, err = s.ledger.Event(ctx, key); err != nil {
		return Verdict{Retry: true, Reason: "ledger", Err: err}
	}
	if rec.Done != nil {
		return Verdict{Outcome: domain.OutcomeDuplicate, ContactID: rec.Done.ContactID}
	}

	v := s.execute(ctx, camp, ev, contact, &person)
	switch {
	case v.Retry && v.wait:
		// Waiting out the CRM's search lag is not a failed attempt.
	case v.Retry:
		rec, err := s.ledger.Failed(wctx, key, s.now())
		if err != nil {
			s.log.WarnContext(ctx, "recording a failed attempt failed", "event_id", ev.ID, "error", err)
			return v
		}
		v.failures, v.firstFailure = rec.Failures, rec.FirstFailure
	case v.Outcome == domain.OutcomeDeadLettered:
		v.failures, v.firstFailure = rec.Failures+1, rec.FirstFailure
		// A replay after an operator's fix starts afresh.
		if err := s.ledger.Clear(wctx, key); err != nil {
			s.log.WarnContext(ctx, "clearing the event's failures failed", "event_id", ev.ID, "error", err)
		}
	default:
		r := ports.Record{Outcome: v.Outcome, ContactID: v.ContactID, At: s.now()}
		if err := s.ledger.Done(wctx, key, r); err != nil {
			// The CRM write happened and the person record will say so
			// (it is written on unlock); the redelivery decides again
			// from it, without a second create.
			return Verdict{Retry: true, Reason: "ledger", Err: fmt.Errorf("record result: %w", err)}
		}
	}
	return v
}

// execute makes the duplicate decision and performs it through the CRM. It
// holds the person's lock; person is updated in place and written back on
// unlock.
func (s *Service) execute(ctx context.Context, camp domain.Campaign, ev domain.ReferrerJoined, contact domain.Contact, person *ports.Person) Verdict {
	crm := s.crms[camp.Connection]
	who := domain.IdentityOf(contact)

	var match domain.Match
	found := false
	switch {
	case person.ContactID != "" && person.CreatedBy == ev.ID:
		// This event created the contact; recording that failed before.
		return Verdict{Outcome: domain.OutcomeCreated, ContactID: person.ContactID}
	case person.ContactID != "":
		match, found = domain.Match{ID: person.ContactID}, true
	case person.Pending != nil:
		v, m, ok, done := s.reconcile(ctx, camp, ev, contact, person)
		if done {
			return v
		}
		match, found = m, ok
	default:
		matches, err := crm.Find(ctx, who)
		if err != nil {
			return s.crmFailure(err)
		}
		var ambiguous bool
		match, found, ambiguous = domain.PickMatch(who, matches)
		if ambiguous {
			s.log.InfoContext(ctx, "several contacts match; picked deterministically (user before lead, then oldest)",
				"connection", camp.Connection, "candidates", len(matches), "contact_id", match.ID, "role", match.Role)
		}
	}

	switch domain.Decide(camp, found) {
	case domain.DecideCreate:
		return s.create(ctx, crm, camp, ev, contact, person)
	case domain.DecideUpdate:
		person.ContactID = match.ID
		return s.update(ctx, crm, person, match.ID, contact)
	case domain.DecideSkip:
		person.ContactID = match.ID
		return Verdict{Outcome: domain.OutcomeSkipped, ContactID: match.ID}
	case domain.DecideNothing:
	}
	return Verdict{Outcome: domain.OutcomeNothing}
}

// create sends the create, first recording it as pending in the person's
// record: if its outcome is lost (timeout, reset, crash), whoever handles
// this person next resolves it before creating anything.
func (s *Service) create(ctx context.Context, crm ports.CRM, camp domain.Campaign, ev domain.ReferrerJoined, contact domain.Contact, person *ports.Person) Verdict {
	person.Pending = &ports.PendingCreate{EventID: ev.ID, At: s.now(), ExternalID: contact.ExternalID}
	if err := s.people.Save(ctx, person); err != nil {
		person.Pending = nil
		return Verdict{Retry: true, Reason: "ledger", Err: fmt.Errorf("record pending create: %w", err)}
	}
	contact.Marker = ev.ID
	res, err := crm.Create(ctx, contact)
	if err != nil {
		var e *ports.Error
		if errors.As(err, &e) && !e.Uncertain {
			person.Pending = nil // certainly not applied (refused, or never sent)
		}
		return s.crmFailure(err)
	}
	person.Pending, person.ContactID = nil, res.ID
	if !res.Existing {
		person.CreatedBy = ev.ID
		return Verdict{Outcome: domain.OutcomeCreated, ContactID: res.ID}
	}
	// The CRM already had this person (a search miss, e.g. its indexing
	// lag): the duplicate policy applies, never an error.
	if domain.Decide(camp, true) == domain.DecideSkip {
		return Verdict{Outcome: domain.OutcomeSkipped, ContactID: res.ID}
	}
	return s.update(ctx, crm, person, res.ID, contact)
}

// reconcile resolves a create whose outcome is unknown. It looks the person
// up by external id (consistent), email and the marker the create carried.
// A contact carrying the marker is the pending create's: it is recorded as
// created for the event that sent it. A contact without the marker is
// someone else's: the pending create is dropped and this event's policy
// applies to that contact. If nothing is found and the create carried an
// external id, the lookup by external id proves it was never applied.
// Otherwise — a lead, or a user matched by email only — search may simply
// not show it yet (leads may share an email, so the CRM would not refuse a
// second one): until the connection's search lag has passed since the
// create was sent, the event waits. Only one create per person is ever
// outstanding, because nothing creates while one is pending.
func (s *Service) reconcile(ctx context.Context, camp domain.Campaign, ev domain.ReferrerJoined, contact domain.Contact, person *ports.Person) (v Verdict, match domain.Match, found, done bool) {
	crm := s.crms[camp.Connection]
	p := *person.Pending
	who := domain.IdentityOf(contact)
	who.Marker = p.EventID
	if p.ExternalID != "" {
		who.ExternalID = p.ExternalID // look the pending create up where it is consistent
	}
	matches, err := crm.Find(ctx, who)
	if err != nil {
		return s.crmFailure(err), domain.Match{}, false, true
	}
	if m, ok := markedBy(matches, p.EventID); ok {
		if p.EventID != ev.ID {
			// Another event's create: record it for that event first, so
			// its redelivery is a duplicate; only then is the pending
			// create settled, and this event's policy applies.
			rec := ports.Record{Outcome: domain.OutcomeCreated, ContactID: m.ID, At: s.now()}
			if err := s.ledger.Done(context.WithoutCancel(ctx), camp.Connection+"/"+p.EventID, rec); err != nil {
				return Verdict{Retry: true, Reason: "ledger", Err: err}, domain.Match{}, false, true
			}
		}
		person.Pending, person.ContactID, person.CreatedBy = nil, m.ID, p.EventID
		s.log.InfoContext(ctx, "resolved a create whose outcome was unknown: it was applied",
			"connection", camp.Connection, "pending_event_id", p.EventID, "contact_id", m.ID)
		if p.EventID == ev.ID {
			return Verdict{Outcome: domain.OutcomeCreated, ContactID: m.ID}, m, true, true
		}
		return Verdict{}, m, true, false
	}
	if len(matches) > 0 {
		m, _, _ := domain.PickMatch(who, matches)
		person.Pending = nil
		s.log.InfoContext(ctx, "a create whose outcome was unknown is moot: the person has another contact",
			"connection", camp.Connection, "pending_event_id", p.EventID, "contact_id", m.ID)
		return Verdict{}, m, true, false
	}
	if p.ExternalID == "" {
		if wait := p.At.Add(s.searchLag(camp.Connection)).Sub(s.now()); wait > 0 {
			return Verdict{Retry: true, wait: true, Reason: "awaiting_search", Delay: wait + s.jitter(250*time.Millisecond),
				Err: fmt.Errorf("a create sent %s ago may not be searchable yet", s.now().Sub(p.At).Round(time.Millisecond))}, domain.Match{}, false, true
		}
	}
	// Proven not applied (by external id), or the search lag has passed
	// and the contact is not there.
	person.Pending = nil
	return Verdict{}, domain.Match{}, false, false
}

func markedBy(matches []domain.Match, marker string) (domain.Match, bool) {
	for _, m := range matches {
		if m.Marker == marker && marker != "" {
			return m, true
		}
	}
	return domain.Match{}, false
}

func (s *Service) update(ctx context.Context, crm ports.CRM, person *ports.Person, id string, contact domain.Contact) Verdict {
	err := crm.Update(ctx, id, contact.ForUpdate())
	if ports.KindOf(err) == ports.NotFound {
		// The remembered contact was deleted or merged away. Forget it;
		// the retry searches afresh.
		person.ContactID = ""
		return Verdict{Retry: true, Reason: "contact_gone", Err: err}
	}
	if err != nil {
		return s.crmFailure(err)
	}
	return Verdict{Outcome: domain.OutcomeUpdated, ContactID: id}
}

func (s *Service) searchLag(conn string) time.Duration {
	if d, ok := s.searchLags[conn]; ok && d > 0 {
		return d
	}
	return DefaultSearchLag
}

// jitter returns d ± 50 %, so retries of many workers do not align.
func (s *Service) jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

// crmFailure classifies a CRM error into retry or dead letter.
func (s *Service) crmFailure(err error) Verdict {
	switch k := ports.KindOf(err); k {
	case ports.Permanent:
		return Verdict{Outcome: domain.OutcomeDeadLettered, Reason: ReasonCRMRejected, Err: err}
	case ports.RateLimited:
		var e *ports.Error
		errors.As(err, &e)
		return Verdict{Retry: true, Reason: k.String(), Err: err, Delay: e.RetryAfter}
	case ports.Transient, ports.Unauthorized, ports.NotFound:
		return Verdict{Retry: true, Reason: k.String(), Err: err}
	}
	return Verdict{Retry: true, Reason: "unknown", Err: err}
}

func (s *Service) deadLetter(ctx context.Context, m Message, ev domain.ReferrerJoined, label string, action domain.Action, reason string, cause error, firstFailure time.Time) Verdict {
	d := ports.DeadLetter{
		Body:      m.Body,
		Headers:   m.Headers,
		Reason:    reason,
		Message:   cause.Error(),
		Attempts:  m.Attempt,
		Subject:   m.Subject,
		FirstSeen: firstFailure,
		Sequence:  m.Sequence,
		EventID:   ev.ID,
		Campaign:  ev.CampaignID,
		Failed:    s.now(),
	}
	if err := s.dlq.DeadLetter(ctx, d); err != nil {
		s.metrics.Retry(label, "dead_letter_failed")
		s.log.ErrorContext(ctx, "dead-lettering failed; the message will be redelivered", "event_id", ev.ID, "reason", reason, "error", err)
		return Verdict{Retry: true, Reason: "dead_letter_failed", Err: err}
	}
	s.metrics.Outcome(label, action, domain.OutcomeDeadLettered, reason)
	s.log.WarnContext(ctx, "event dead-lettered", "event_id", ev.ID, "campaign", ev.CampaignID, "outcome", domain.OutcomeDeadLettered,
		"reason", reason, "attempts", m.Attempt, "stream_seq", m.Sequence, "detail", cause.Error())
	return Verdict{Outcome: domain.OutcomeDeadLettered, Reason: reason, Err: cause}
}

func (s *Service) settle(ctx context.Context, m Message, ev domain.ReferrerJoined, label string, action domain.Action, v Verdict, start time.Time) Verdict {
	s.metrics.Outcome(label, action, v.Outcome, "")
	now := s.now()
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
