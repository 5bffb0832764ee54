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
	// MaxAttempts caps deliveries of one message; a message still failing
	// transiently at the cap is dead-lettered. Default 5.
	MaxAttempts int
	Now         func() time.Time // for tests; default time.Now
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
}

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
		return ev, s.deadLetter(ctx, m, ev, LabelUnknown, "", inv.Reason, err)
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
		return ev, s.deadLetter(ctx, m, ev, label, camp.Action, domain.ReasonMapping, err)
	}

	v := s.apply(ctx, camp, ev, contact)
	if !v.Retry {
		if v.Outcome == domain.OutcomeDeadLettered {
			return ev, s.deadLetter(ctx, m, ev, label, camp.Action, v.Reason, v.Err)
		}
		return ev, s.settle(ctx, m, ev, label, camp.Action, v, start)
	}
	if m.Attempt >= s.maxAttempts {
		reason := ReasonAttemptsExhausted
		if ports.KindOf(v.Err) == ports.Unauthorized {
			reason = ReasonUnauthorized
		}
		return ev, s.deadLetter(ctx, m, ev, label, camp.Action, reason,
			fmt.Errorf("gave up after %d attempts: %w", m.Attempt, v.Err))
	}
	s.metrics.Retry(label, v.Reason)
	s.log.InfoContext(ctx, "event will be retried", "event_id", ev.ID, "campaign", ev.CampaignID,
		"attempt", m.Attempt, "cause", v.Reason, "error", v.Err)
	return ev, v
}

// apply runs the exactly-once section for one event: claim it in the
// ledger, decide against the CRM's current state, write, and record.
func (s *Service) apply(ctx context.Context, camp domain.Campaign, ev domain.ReferrerJoined, contact domain.Contact) Verdict {
	if s.crms[camp.Connection] == nil {
		// A catalog swapped in by SetCatalog can name a connection this
		// process has no CRM for. That is an operator's mistake, not the
		// event's: retry, so a corrected catalog still applies it.
		return Verdict{Retry: true, Reason: "no_crm", Err: fmt.Errorf("connection %q has no CRM", camp.Connection)}
	}
	who := domain.IdentityOf(contact)
	unlock, err := s.locks.lock(ctx, camp.Connection+"/"+who.Email)
	if err != nil {
		return Verdict{Retry: true, Reason: "cancelled", Err: err}
	}
	defer unlock()

	claim, err := s.ledger.Claim(ctx, camp.Connection+"/"+ev.ID)
	switch {
	case errors.Is(err, ports.ErrClaimHeld):
		return Verdict{Retry: true, Reason: "claim_held", Err: err}
	case err != nil:
		return Verdict{Retry: true, Reason: "ledger", Err: fmt.Errorf("claim event: %w", err)}
	case claim.Done != nil:
		return Verdict{Outcome: domain.OutcomeDuplicate, ContactID: claim.Done.ContactID}
	}

	v := s.execute(ctx, camp, contact)
	if v.Retry || v.Outcome == domain.OutcomeDeadLettered {
		// Let the next attempt (or a replay after an operator's fix)
		// claim the event at once. The domain decision is re-made then,
		// against the CRM's state at that time.
		if rerr := s.ledger.Release(context.WithoutCancel(ctx), claim); rerr != nil {
			s.log.WarnContext(ctx, "releasing ledger claim failed; it expires with its lease", "event_id", ev.ID, "error", rerr)
		}
		return v
	}
	rec := ports.Record{Outcome: v.Outcome, ContactID: v.ContactID, At: s.now()}
	if err := s.ledger.Complete(context.WithoutCancel(ctx), claim, rec); err != nil {
		// The CRM write happened; redelivery will find the contact and
		// reach the same state without a second create.
		return Verdict{Retry: true, Reason: "ledger", Err: fmt.Errorf("record result: %w", err)}
	}
	return v
}

// execute makes the duplicate decision and performs it through the CRM.
func (s *Service) execute(ctx context.Context, camp domain.Campaign, contact domain.Contact) Verdict {
	crm := s.crms[camp.Connection]
	who := domain.IdentityOf(contact)

	var match domain.Match
	found := false
	if id, ok, err := s.people.Contact(ctx, camp.Connection, who); err != nil {
		return Verdict{Retry: true, Reason: "ledger", Err: fmt.Errorf("person lookup: %w", err)}
	} else if ok && id != "" { // an empty id is a forgotten person, not a contact
		match, found = domain.Match{ID: id}, true
	} else {
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
		res, err := crm.Create(ctx, contact)
		if err != nil {
			return s.crmFailure(err)
		}
		s.remember(ctx, camp.Connection, who, res.ID)
		if !res.Existing {
			return Verdict{Outcome: domain.OutcomeCreated, ContactID: res.ID}
		}
		// The CRM already had this person (a search miss, e.g. its
		// indexing lag): the duplicate policy applies, never an error.
		if domain.Decide(camp, true) == domain.DecideSkip {
			return Verdict{Outcome: domain.OutcomeSkipped, ContactID: res.ID}
		}
		return s.update(ctx, crm, camp.Connection, res.ID, contact)
	case domain.DecideUpdate:
		s.remember(ctx, camp.Connection, who, match.ID)
		return s.update(ctx, crm, camp.Connection, match.ID, contact)
	case domain.DecideSkip:
		s.remember(ctx, camp.Connection, who, match.ID)
		return Verdict{Outcome: domain.OutcomeSkipped, ContactID: match.ID}
	case domain.DecideNothing:
	}
	return Verdict{Outcome: domain.OutcomeNothing}
}

func (s *Service) update(ctx context.Context, crm ports.CRM, conn, id string, contact domain.Contact) Verdict {
	err := crm.Update(ctx, id, contact.ForUpdate())
	if ports.KindOf(err) == ports.NotFound {
		// The remembered contact was deleted or merged away. Forget it;
		// the retry searches afresh.
		s.remember(ctx, conn, domain.IdentityOf(contact), "")
		return Verdict{Retry: true, Reason: "contact_gone", Err: err}
	}
	if err != nil {
		return s.crmFailure(err)
	}
	return Verdict{Outcome: domain.OutcomeUpdated, ContactID: id}
}

func (s *Service) remember(ctx context.Context, conn string, who domain.Identity, id string) {
	if err := s.people.Remember(context.WithoutCancel(ctx), conn, who, id); err != nil {
		// Only an optimisation is lost: the next event for this person
		// searches the CRM instead.
		s.log.WarnContext(ctx, "remembering the person's contact id failed", "connection", conn, "error", err)
	}
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

func (s *Service) deadLetter(ctx context.Context, m Message, ev domain.ReferrerJoined, label string, action domain.Action, reason string, cause error) Verdict {
	d := ports.DeadLetter{
		Body:     m.Body,
		Headers:  m.Headers,
		Reason:   reason,
		Message:  cause.Error(),
		Attempts: m.Attempt,
		Subject:  m.Subject,
		Sequence: m.Sequence,
		EventID:  ev.ID,
		Campaign: ev.CampaignID,
		Failed:   s.now(),
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
	since := ev.Time
	if since.IsZero() {
		since = m.Published
	}
	if !since.IsZero() && v.Outcome != domain.OutcomeDuplicate {
		s.metrics.Processed(now.Sub(since))
	}
	s.log.InfoContext(ctx, "event settled", "event_id", ev.ID, "campaign", ev.CampaignID, "outcome", v.Outcome,
		"contact_id", v.ContactID, "attempts", m.Attempt, "duration", now.Sub(start))
	return v
}
