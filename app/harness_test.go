package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

// now is where the service's clock starts in every test: five seconds after
// the events' own time. Tests move the harness's clock, never a sleep.
var now = time.Date(2026, 11, 28, 10, 0, 5, 0, time.UTC)

const maxAttempts = 3

var (
	emailField = domain.Field{From: domain.SourceReferrerEmail, To: domain.TargetEmail}
	nameField  = domain.Field{From: domain.SourceReferrerFirstName, To: domain.TargetName}
	linkField  = domain.Field{From: domain.SourceReferrerURL, To: "custom_attributes.referral_link"}
	xidField   = domain.Field{From: domain.SourceReferrerID, To: domain.TargetExternalID}
)

// testCatalog is the catalog every test starts with.
func testCatalog() *domain.Catalog {
	return &domain.Catalog{Campaigns: map[string]domain.Campaign{
		// skip duplicates
		"camp_lead": {Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
			Fields: []domain.Field{emailField, nameField, linkField}},
		// update duplicates
		"camp_update": {Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateUpdate,
			Fields: []domain.Field{emailField, nameField}},
		"camp_user": {Connection: "intercom", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateUpdate,
			Fields: []domain.Field{emailField, xidField, nameField}},
		// users matched by email only (search lags), duplicates skipped
		"camp_user_email": {Connection: "intercom", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateSkip,
			Fields: []domain.Field{emailField, nameField}},
		"camp_eu": {Connection: "intercom_eu", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
			Fields: []domain.Field{emailField}},
		"camp_nothing": {Action: domain.ActionNothing},
		"camp_badmap": {Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
			Fields: []domain.Field{emailField, {From: "referrer.meta.opt_out", To: domain.TargetUnsubscribed}}},
	}}
}

// clock is the harness's clock: tests move it, never sleep.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

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

// harness is a Service wired to the in-memory ports, on one clock.
type harness struct {
	svc     *app.Service
	clock   *clock
	crm     *memory.CRM // connection "intercom"
	crmEU   *memory.CRM // connection "intercom_eu"
	ledger  *memory.Ledger
	dlq     *memory.DeadLetters
	metrics *memory.Metrics
	logs    *logRecorder
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	c := &clock{t: now}
	h := &harness{
		clock: c, crm: &memory.CRM{Now: c.Now}, crmEU: &memory.CRM{Now: c.Now}, ledger: memory.NewLedger(),
		dlq: &memory.DeadLetters{}, metrics: &memory.Metrics{}, logs: &logRecorder{},
	}
	h.svc = h.replica(t, h.config())
	return h
}

func (h *harness) config() app.Config {
	return app.Config{
		Catalog:     testCatalog(),
		CRMs:        map[string]ports.CRM{"intercom": h.crm, "intercom_eu": h.crmEU},
		Ledger:      h.ledger,
		DeadLetters: h.dlq,
		Metrics:     h.metrics,
		Logger:      slog.New(h.logs),
		MaxAttempts: maxAttempts,
		Now:         h.clock.Now,
		Jitter:      func(time.Duration) time.Duration { return 0 },
	}
}

// replica is another Service on the harness's ports, as another process
// (with its own in-process locks) sharing the ledger and the CRM.
func (h *harness) replica(t *testing.T, cfg app.Config) *app.Service {
	t.Helper()
	svc, err := app.New(cfg)
	if err != nil {
		t.Fatalf("app.New: got error %v, want none", err)
	}
	return svc
}

// logRecorder is a slog.Handler keeping every record.
type logRecorder struct {
	mu      sync.Mutex
	records []logRecord
}

type logRecord struct {
	Level   slog.Level
	Message string
	Attrs   map[string]any
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	lr := logRecord{Level: rec.Level, Message: rec.Message, Attrs: map[string]any{}}
	rec.Attrs(func(a slog.Attr) bool {
		lr.Attrs[a.Key] = a.Value.Any()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, lr)
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

// ev describes a test event; zero fields take the defaults of the event
// contract's example.
type ev struct {
	ID, Campaign, Email string
	NoTime              bool
	Meta                map[string]any
}

const (
	ada = "ada@example.com"
	bob = "bob@example.com"
)

func (e ev) data() map[string]any {
	if e.Campaign == "" {
		e.Campaign = "camp_lead"
	}
	if e.Email == "" {
		e.Email = "Ada@Example.com"
	}
	ref := map[string]any{
		"id": "usr_8812", "first_name": "Ada", "email": e.Email, "code": "ADA-7Q2",
		"url": "https://refer.example.com/ADA-7Q2", "source": "Widget", "signed_up_at": "2026-11-28T09:59:58Z",
	}
	if e.Meta != nil {
		ref["meta"] = e.Meta
	}
	return map[string]any{"campaign_id": e.Campaign, "campaign_name": "Spring launch", "referrer": ref}
}

func (e ev) id() string {
	if e.ID == "" {
		return "evt-1"
	}
	return e.ID
}

// body is the event in structured mode.
func (e ev) body() []byte {
	env := map[string]any{
		"specversion": "1.0", "id": e.id(), "source": "/campaigns/x", "type": domain.EventType,
		"datacontenttype": "application/json", "data": e.data(),
	}
	if !e.NoTime {
		env["time"] = "2026-11-28T10:00:00Z"
	}
	b, err := json.Marshal(env)
	if err != nil {
		panic(err)
	}
	return b
}

// msg is the event's first delivery in structured mode.
func (e ev) msg() app.Message { return delivery(e.body(), 1) }

// at is the event's delivery number attempt.
func (e ev) at(attempt int) app.Message { return delivery(e.body(), attempt) }

// binary is the event's first delivery in binary mode.
func (e ev) binary() app.Message {
	b, err := json.Marshal(e.data())
	if err != nil {
		panic(err)
	}
	m := delivery(b, 1)
	m.Headers = map[string]string{
		"ce-specversion": "1.0", "ce-id": e.id(), "ce-source": "/campaigns/x", "ce-type": domain.EventType,
		"ce-time": "2026-11-28T10:00:00Z", "content-type": "application/json",
	}
	return m
}

func delivery(body []byte, attempt int) app.Message {
	return app.Message{
		Body: body, Headers: map[string]string{"nats-msg-id": "m-1"}, Subject: "referrer.joined", Sequence: 42,
		Attempt: attempt, Received: now, Published: now.Add(-time.Second),
	}
}

// crmErr is a classified CRM failure.
func crmErr(kind ports.ErrorKind) error { return &ports.Error{Op: "test", Kind: kind} }

// recv receives from ch, failing the test if nothing arrives in time. The
// timeout only turns a hang into a failure; it never decides a pass.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
