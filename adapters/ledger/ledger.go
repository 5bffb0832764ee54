// Package ledger is the durable exactly-once ledger in a NATS JetStream
// key-value bucket (ports.Ledger): one entry per person, holding the
// person's CRM contact, at most one pending create and the outcomes of the
// person's recent events.
//
// Every write is a compare-and-set: a KV create when the person is new, a
// KV update at the revision read otherwise, so exactly one of two racing
// writers wins and the other learns it (ports.ErrConflict). Keys are
// hashes of the connection and normalised email, so no email appears in
// the bucket's keys or values.
package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Config configures the ledger bucket.
type Config struct {
	Bucket string // default "referrer_sync_ledger"
	// Replicas of the bucket's stream; use 3 in a 3-node cluster so the
	// ledger survives a node as the event stream does. Default 1.
	Replicas int
	// TTL is how long a person's entry is kept after its last write. It
	// bounds how late a duplicate or a replay is still recognised. Default
	// 30 days.
	TTL    time.Duration
	Logger *slog.Logger
}

// DefaultBucket is the bucket's default name.
const DefaultBucket = "referrer_sync_ledger"

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("ledger: replicas %d is not between 1 and 5", c.Replicas))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("ledger: ttl %s is negative", c.TTL))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.TTL == 0 {
		c.TTL = 30 * 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Ledger implements ports.Ledger on a KV bucket.
type Ledger struct {
	kv  jetstream.KeyValue
	cfg Config
}

// New opens the bucket, creating it when it is missing. An existing
// bucket is used as it is: settings an operator changed (history, size,
// ttl, replicas) are left alone and their differences from the
// configuration logged, never reverted. Safe to run from every replica at
// once: a create that loses the race to another replica's opens the
// winner's bucket.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	want := jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "referrer-sync exactly-once ledger: one entry per person",
		History:     1,
		TTL:         cfg.TTL,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, want)
		if errors.Is(err, jetstream.ErrBucketExists) || isStreamNameInUse(err) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	} else if err == nil {
		logDifferences(ctx, cfg.Logger, kv, want)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: provision bucket %s: %w", cfg.Bucket, err)
	}
	return &Ledger{kv: kv, cfg: cfg}, nil
}

// Open opens an existing bucket without creating or changing it, for the
// dry run and tools that must write nothing. It returns ErrNoBucket when
// the bucket does not exist (yet).
func Open(ctx context.Context, js jetstream.JetStream, bucket string) (*Ledger, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("ledger: bucket %s: %w", bucket, ErrNoBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: open bucket %s: %w", bucket, err)
	}
	cfg := Config{Bucket: bucket}
	cfg.setDefaults()
	return &Ledger{kv: kv, cfg: cfg}, nil
}

// ErrNoBucket means the ledger bucket does not exist.
var ErrNoBucket = errors.New("no such ledger bucket")

func logDifferences(ctx context.Context, log *slog.Logger, kv jetstream.KeyValue, want jetstream.KeyValueConfig) {
	st, err := kv.Status(ctx)
	if err != nil {
		log.WarnContext(ctx, "ledger: cannot read the bucket's settings", "bucket", want.Bucket, "error", err)
		return
	}
	var diffs []string
	if st.TTL() != want.TTL {
		diffs = append(diffs, fmt.Sprintf("ttl %s (configured %s)", st.TTL(), want.TTL))
	}
	if st.History() != int64(want.History) {
		diffs = append(diffs, fmt.Sprintf("history %d (the ledger needs 1; more only costs space)", st.History()))
	}
	if js, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		if r := js.StreamInfo().Config.Replicas; r != want.Replicas {
			diffs = append(diffs, fmt.Sprintf("replicas %d (configured %d)", r, want.Replicas))
		}
	}
	if len(diffs) > 0 {
		log.InfoContext(ctx, "ledger: the bucket exists with settings that differ from the configuration; they are left as they are",
			"bucket", want.Bucket, "differences", strings.Join(diffs, "; "))
	}
}

// Key returns the bucket key of a person: a hash, so no email is in keys.
func Key(connection, email string) string {
	h := sha256.New()
	for _, p := range []string{connection, email} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "p." + hex.EncodeToString(h.Sum(nil)[:20])
}

// record is the stored form of ports.Person. Field names are short: the
// record is read and written for every event of the person.
type record struct {
	V          int            `json:"v"`
	Connection string         `json:"conn,omitempty"`
	ContactID  string         `json:"contact_id,omitempty"`
	Pending    *pendingRecord `json:"pending,omitempty"`
	Events     []eventRecord  `json:"events,omitempty"`

	// Fields of the first record format, read so an upgrade keeps what
	// it knew of each person.
	OldPendingEvent string `json:"pending_event,omitempty"`
	OldPendingAt    int64  `json:"pending_at_ms,omitempty"`
	OldPendingXID   string `json:"pending_external_id,omitempty"`
}

type pendingRecord struct {
	Event      string `json:"event"`
	Owner      string `json:"owner,omitempty"`
	NotAfter   int64  `json:"not_after_ms"`
	ExternalID string `json:"xid,omitempty"`
}

type eventRecord struct {
	ID           string         `json:"id"`
	Outcome      domain.Outcome `json:"o,omitempty"`
	ContactID    string         `json:"c,omitempty"`
	At           int64          `json:"at,omitempty"`
	Failures     int            `json:"f,omitempty"`
	FirstFailure int64          `json:"ff,omitempty"`
	Reason       string         `json:"r,omitempty"`
	ReplayedFrom string         `json:"rf,omitempty"`
	CountedBy    string         `json:"cb,omitempty"`
	FailedBy     []string       `json:"fb,omitempty"`
}

// oldLease is how long a pending create of the first record format is
// treated as possibly in flight from when it was recorded: that format's
// default lease.
const oldLease = 2 * time.Minute

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

func encode(p *ports.Person) ([]byte, error) {
	r := record{V: 2, Connection: p.Connection, ContactID: p.ContactID}
	if p.Pending != nil {
		r.Pending = &pendingRecord{Event: p.Pending.EventID, Owner: p.Pending.Owner, NotAfter: ms(p.Pending.NotAfter), ExternalID: p.Pending.ExternalID}
	}
	for _, e := range p.Events {
		r.Events = append(r.Events, eventRecord{
			ID: e.ID, Outcome: e.Outcome, ContactID: e.ContactID, At: ms(e.At), Failures: e.Failures,
			FirstFailure: ms(e.FirstFailure), Reason: e.Reason, ReplayedFrom: e.ReplayedFrom, CountedBy: e.CountedBy, FailedBy: e.FailedBy,
		})
	}
	return json.Marshal(r)
}

func decode(b []byte, p *ports.Person) error {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("ledger: corrupt person record: %w", err)
	}
	if r.Connection != "" {
		p.Connection = r.Connection
	}
	p.ContactID = r.ContactID
	switch {
	case r.Pending != nil:
		p.Pending = &ports.PendingCreate{EventID: r.Pending.Event, Owner: r.Pending.Owner, NotAfter: fromMS(r.Pending.NotAfter), ExternalID: r.Pending.ExternalID}
	case r.OldPendingEvent != "":
		p.Pending = &ports.PendingCreate{EventID: r.OldPendingEvent, NotAfter: fromMS(r.OldPendingAt).Add(oldLease), ExternalID: r.OldPendingXID}
	}
	for _, e := range r.Events {
		p.Events = append(p.Events, ports.EventRecord{
			ID: e.ID, Outcome: e.Outcome, ContactID: e.ContactID, At: fromMS(e.At), Failures: e.Failures,
			FirstFailure: fromMS(e.FirstFailure), Reason: e.Reason, ReplayedFrom: e.ReplayedFrom, CountedBy: e.CountedBy, FailedBy: e.FailedBy,
		})
	}
	return nil
}

// Person implements ports.Ledger: one KV read.
func (l *Ledger) Person(ctx context.Context, connection, email string) (ports.Person, error) {
	p := ports.Person{Connection: connection, Email: email}
	e, err := l.kv.Get(ctx, Key(connection, email))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("ledger: read person: %w", err)
	}
	if err := decode(e.Value(), &p); err != nil {
		return p, err
	}
	p.Revision = e.Revision()
	return p, nil
}

// Put implements ports.Ledger: one KV create (new person) or
// compare-and-set update.
func (l *Ledger) Put(ctx context.Context, p *ports.Person) error {
	b, err := encode(p)
	if err != nil {
		return fmt.Errorf("ledger: encode person: %w", err)
	}
	k := Key(p.Connection, p.Email)
	var rev uint64
	if p.Revision == 0 {
		rev, err = l.kv.Create(ctx, k, b)
	} else {
		rev, err = l.kv.Update(ctx, k, b, p.Revision)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ports.ErrConflict
		}
		return fmt.Errorf("ledger: write person: %w", err)
	}
	p.Revision = rev
	return nil
}

// Forget drops what is remembered of a person, for tests and tools.
func (l *Ledger) Forget(ctx context.Context, connection, email string) error {
	err := l.kv.Delete(ctx, Key(connection, email))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// All returns every person recorded, for tools and tests (`ledger show`).
// Email is empty: the ledger does not store it.
func (l *Ledger) All(ctx context.Context) ([]ports.Person, error) {
	w, err := l.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("ledger: list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []ports.Person
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return out, nil
			}
			if e == nil {
				return out, nil // the initial values are all delivered
			}
			p := ports.Person{Revision: e.Revision()}
			if err := decode(e.Value(), &p); err != nil {
				return nil, fmt.Errorf("ledger: key %s: %w", e.Key(), err)
			}
			out = append(out, p)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Events returns the record of every event the ledger remembers, by
// connection and event id ("conn/id"), for tools and tests.
func (l *Ledger) Events(ctx context.Context) (map[string]ports.EventRecord, error) {
	all, err := l.All(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]ports.EventRecord{}
	for _, p := range all {
		for _, e := range p.Events {
			out[p.Connection+"/"+e.ID] = e
		}
	}
	return out, nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164
	}
	return false
}

func isStreamNameInUse(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNameInUse
}

// ErrReadOnly is what a read-only ledger answers every write with.
var ErrReadOnly = errors.New("ledger: read-only (dry run): nothing is written")

// ReadOnly is the ledger of a dry run: it reads what the service knows and
// writes nothing. When the bucket does not exist yet (the service never
// ran), every person is unknown.
type ReadOnly struct{ l *Ledger }

// OpenReadOnly opens the bucket for reading, without creating or changing
// it.
func OpenReadOnly(ctx context.Context, js jetstream.JetStream, bucket string) (*ReadOnly, error) {
	l, err := Open(ctx, js, bucket)
	if errors.Is(err, ErrNoBucket) {
		return &ReadOnly{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &ReadOnly{l: l}, nil
}

// Person implements ports.Ledger.
func (r *ReadOnly) Person(ctx context.Context, connection, email string) (ports.Person, error) {
	if r.l == nil {
		return ports.Person{Connection: connection, Email: email}, nil
	}
	return r.l.Person(ctx, connection, email)
}

// Put implements ports.Ledger: it refuses.
func (r *ReadOnly) Put(context.Context, *ports.Person) error { return ErrReadOnly }

// Event returns the record of one event, found by scanning every person
// (the ledger is keyed by person, not by event): for tools and tests.
func (l *Ledger) Event(ctx context.Context, connection, eventID string) (ports.EventRecord, bool, error) {
	all, err := l.Events(ctx)
	if err != nil {
		return ports.EventRecord{}, false, err
	}
	r, ok := all[connection+"/"+eventID]
	return r, ok, nil
}
