// Package app is referrer-sync's one use case: handle a referrer.joined
// message. It orchestrates the domain's decisions and the ports' effects,
// and classifies every failure as "try again later" or "never": it imports
// only the domain, the ports and the standard library.
//
// The files follow the steps of the use case: service.go decodes, looks the
// campaign up and maps (Handle); apply.go is the exactly-once section over
// the person's ledger record; reconcile.go resolves a create whose outcome
// is unknown; record.go edits the record; classify.go sorts CRM failures;
// report.go counts and logs the one outcome of each message; plan.go is the
// read-only dry run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
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
	// ReasonDeliveriesExhausted: an operator-set nats.max_deliver was
	// reached before the event settled; the server would deliver it no
	// more, so it is dead-lettered rather than dropped.
	ReasonDeliveriesExhausted = "deliveries_exhausted"
)

// DeadLetterReasons lists every reason a message can be dead-lettered with,
// so metrics can show each at zero from start-up.
var DeadLetterReasons = []string{
	domain.ReasonTooLarge, domain.ReasonMalformed, domain.ReasonWrongType, domain.ReasonMissingID,
	domain.ReasonMissingCampaign, domain.ReasonMissingEmail, domain.ReasonInvalidEmail, domain.ReasonMapping,
	ReasonCRMRejected, ReasonUnauthorized, ReasonAttemptsExhausted, ReasonDeliveriesExhausted,
}

// Retry causes: why a delivery was sent back. Waits (person_busy,
// awaiting_search, rate_limited, no_crm) are not failed attempts.
const (
	CausePersonBusy       = "person_busy"
	CauseAwaitingSearch   = "awaiting_search"
	CauseRateLimited      = "rate_limited"
	CauseTransient        = "transient"
	CauseUnauthorized     = "unauthorized"
	CauseNotFound         = "not_found"
	CauseContactGone      = "contact_gone"
	CauseLedger           = "ledger"
	CauseNoCRM            = "no_crm"
	CauseCancelled        = "cancelled"
	CauseDeadLetterFailed = "dead_letter_failed"
)

// RetryCauses lists every retry cause, so metrics can show each at zero.
var RetryCauses = []string{
	CausePersonBusy, CauseAwaitingSearch, CauseRateLimited, CauseTransient, CauseUnauthorized,
	CauseNotFound, CauseContactGone, CauseLedger, CauseNoCRM, CauseCancelled, CauseDeadLetterFailed,
}

// Campaign label values for messages that have no configured campaign, so
// metric labels stay bounded by the configuration.
const (
	LabelUnconfigured = "_unconfigured"
	LabelUnknown      = "_unknown"
)

// ReplayedFromHeader (lower-case, as Message.Headers holds it) names the
// dead letter a replayed message came from. Only such a message re-arms an
// event that was dead-lettered.
const ReplayedFromHeader = "referrer-sync-replayed-from"

// Defaults.
const (
	// DefaultSearchLag is how long after a create the CRM's search may miss
	// the new contact, when the connection does not say. Intercom documents
	// "a few minutes".
	DefaultSearchLag = 5 * time.Minute
	// DefaultCommitGrace is how long after its client gave up a create may
	// still be applied, when the connection does not say: a request the
	// CRM accepted is committed within its own request timeout.
	DefaultCommitGrace = 30 * time.Second
	// DefaultLease bounds how long one create may keep a person: the create
	// is sent only within it, so a crashed sender's person is free again
	// when it ends.
	DefaultLease = 10 * time.Second
	// DefaultMaxAttempts is the failed attempts an event may use.
	DefaultMaxAttempts = 5
	// DefaultRemember is how long a settled event is remembered in its
	// person's record (the ledger bucket's ttl should be at least this).
	DefaultRemember = 30 * 24 * time.Hour
	// DefaultMaxEvents bounds the events remembered per person.
	DefaultMaxEvents = 64
)

// Config holds the application's dependencies and settings.
type Config struct {
	Catalog     *domain.Catalog
	CRMs        map[string]ports.CRM // by connection name
	Ledger      ports.Ledger
	DeadLetters ports.DeadLetters
	Metrics     ports.Metrics
	Logger      *slog.Logger
	// MaxAttempts caps the failed attempts of one event, counted in the
	// ledger across deliveries and replicas; an event still failing
	// transiently at the cap is dead-lettered. Waiting (for another
	// worker's create, for search lag, for a rate limit) is not a failed
	// attempt. Default 5.
	MaxAttempts int
	// SearchLags is, per connection, how long after a create the CRM's
	// search may still miss the contact (DefaultSearchLag when unset).
	SearchLags map[string]time.Duration
	// CommitGraces is, per connection, how long after a create's client
	// gave up the CRM may still apply it (DefaultCommitGrace when unset).
	CommitGraces map[string]time.Duration
	// Lease bounds one create: it is sent only within Lease of being
	// recorded as pending (and within the delivery's own deadline). Others
	// wait for the person at most that long before resolving it. Default
	// 10s.
	Lease time.Duration
	// Remember and MaxEvents bound the settled events kept per person:
	// a duplicate is recognised as long as its event is remembered.
	Remember  time.Duration
	MaxEvents int
	// Owner names this process in pending creates, for diagnosis.
	Owner string
	Now   func() time.Time // for tests; default time.Now
	// Jitter returns a random duration in [0, d]; for tests. Default
	// math/rand.
	Jitter func(d time.Duration) time.Duration
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Catalog == nil {
		errs = append(errs, errors.New("app: Catalog is required"))
	}
	if c.Ledger == nil {
		errs = append(errs, errors.New("app: Ledger is required"))
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
	if c.Lease < 0 {
		errs = append(errs, fmt.Errorf("app: Lease %s is negative", c.Lease))
	}
	if c.Remember < 0 || c.MaxEvents < 0 {
		errs = append(errs, errors.New("app: Remember and MaxEvents must not be negative"))
	}
	for _, conn := range sortedKeys(c.SearchLags) {
		if c.SearchLags[conn] < 0 {
			errs = append(errs, fmt.Errorf("app: search lag of connection %s is negative", conn))
		}
	}
	for _, conn := range sortedKeys(c.CommitGraces) {
		if c.CommitGraces[conn] < 0 {
			errs = append(errs, fmt.Errorf("app: commit grace of connection %s is negative", conn))
		}
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
	dlq          ports.DeadLetters
	metrics      ports.Metrics
	log          *slog.Logger
	cfg          Config
	locks        *keyLocks
	unconfigured sync.Map      // campaign id → struct{}: log once per campaign
	deliveries   atomic.Uint64 // numbers this process's deliveries in the ledger's records
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Remember == 0 {
		cfg.Remember = DefaultRemember
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.Owner == "" {
		// Unique per Service: two in one process (or one restarted with
		// the pid of a former one) never share delivery names.
		host, _ := os.Hostname()
		cfg.Owner = host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(rand.Uint64()%1e6, 36) //nolint:gosec // G404: tells owners apart, guards nothing
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = randomJitter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		crms:    cfg.CRMs,
		ledger:  cfg.Ledger,
		dlq:     cfg.DeadLetters,
		metrics: cfg.Metrics,
		log:     cfg.Logger,
		cfg:     cfg,
		locks:   newKeyLocks(),
	}
	s.catalog.Store(cfg.Catalog)
	return s, nil
}

// SetCatalog swaps the campaign settings atomically: each message sees one
// whole version, old or new.
func (s *Service) SetCatalog(c *domain.Catalog) { s.catalog.Store(c) }

// Message is one delivery of a message from the bus.
type Message struct {
	Body    []byte
	Headers map[string]string // lower-case names
	// OriginalHeaders are the headers exactly as received (names' case,
	// every value), carried untouched into a dead letter.
	OriginalHeaders map[string][]string
	Subject         string
	Sequence        uint64    // stream sequence
	Attempt         int       // 1 for the first delivery
	Received        time.Time // when this delivery arrived
	// Published is when the message entered the stream; it stands in for
	// the event's own time when the event carries none.
	Published time.Time
	// LastDelivery is set when the server will not deliver the message
	// again (an operator-set delivery limit was reached): a delivery that
	// would be retried is dead-lettered instead, never dropped.
	LastDelivery bool
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
	// example when a CRM's rate-limit window resets, or when the create
	// another worker is sending for the same person must have ended).
	Delay     time.Duration
	ContactID string
	Err       error // the failure behind a retry or dead letter

	// Wait marks a retry that is a wait (another worker's create, search
	// lag, a rate limit), not a failed attempt.
	Wait bool

	failures     int // failed attempts recorded in the ledger, with this one
	firstFailure time.Time
}

// Handle processes one delivery. It never returns an unclassified failure:
// the verdict says whether to acknowledge or to retry, and every settled
// verdict has been counted exactly once.
func (s *Service) Handle(ctx context.Context, m Message) Verdict {
	start := s.cfg.Now()
	ev, err := domain.DecodeEvent(m.Body, m.Headers)
	if err != nil {
		var inv *domain.InvalidEventError
		errors.As(err, &inv)
		label := LabelUnknown
		if ev.CampaignID != "" {
			label = s.label(s.catalog.Load(), ev.CampaignID)
		}
		return s.deadLetter(ctx, m, ev, label, "", inv.Reason, err, time.Time{}).identify(ev)
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
		return s.settle(ctx, m, ev, LabelUnconfigured, "", Verdict{Outcome: domain.OutcomeUnconfigured}, start).identify(ev)
	}
	label := s.label(catalog, ev.CampaignID)
	if camp.Action == domain.ActionNothing {
		return s.settle(ctx, m, ev, label, camp.Action, Verdict{Outcome: domain.OutcomeNothing}, start).identify(ev)
	}
	contact, err := domain.MapContact(camp, ev)
	if err != nil {
		return s.deadLetter(ctx, m, ev, label, camp.Action, domain.ReasonMapping, err, time.Time{}).identify(ev)
	}
	e := &attempt{s: s, msg: m, ev: ev, camp: camp, contact: contact, label: label, start: start,
		token: s.cfg.Owner + "#" + strconv.FormatUint(s.deliveries.Add(1), 10)}
	return e.run(ctx).identify(ev)
}

func (v Verdict) identify(ev domain.ReferrerJoined) Verdict {
	v.EventID, v.Campaign = ev.ID, ev.CampaignID
	return v
}

// label is the campaign's metric label: its id when the file lists it,
// else LabelUnconfigured, so labels stay bounded by the file.
func (s *Service) label(catalog *domain.Catalog, campaign string) string {
	if _, listed := catalog.Campaigns[campaign]; listed {
		return campaign
	}
	return LabelUnconfigured
}

func (s *Service) searchLag(conn string) time.Duration {
	if d, ok := s.cfg.SearchLags[conn]; ok && d > 0 {
		return d
	}
	return DefaultSearchLag
}

func (s *Service) commitGrace(conn string) time.Duration {
	if d, ok := s.cfg.CommitGraces[conn]; ok && d > 0 {
		return d
	}
	return DefaultCommitGrace
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
