// Package ledger is the durable idempotency ledger in a NATS JetStream
// key-value bucket: which events were applied (ports.Ledger) and which CRM
// contact each person is (ports.People).
//
// Person locks are atomic: taking one is a KV create (a new person) or a
// compare-and-set update on the revision read, so exactly one writer wins;
// the lock carries a lease, so a crashed holder's lock is taken over, not
// stuck. Event records are written only under the person's lock. Keys are
// hashes, so no event id or email appears in the bucket's keys.
package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Config configures the ledger bucket.
type Config struct {
	Bucket string // default "referrer_sync_ledger"
	// Replicas of the bucket's stream; use 3 in a 3-node cluster so the
	// ledger survives a node as the event stream does. Default 1.
	Replicas int
	// TTL is how long records are kept. It bounds how late a duplicate or
	// a replay is still recognised. Default 30 days.
	TTL time.Duration
	// Lease is how long a person's lock stays exclusive. After it, another
	// worker may take the lock over (its holder crashed). It must exceed
	// the longest processing of one event. Default 2 minutes.
	Lease time.Duration
	// Owner names this process in claims, for diagnosis. Default
	// host-pid-random.
	Owner string
	Now   func() time.Time
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("ledger: replicas %d is not between 1 and 5", c.Replicas))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("ledger: ttl %s is negative", c.TTL))
	}
	if c.Lease < 0 {
		errs = append(errs, fmt.Errorf("ledger: lease %s is negative", c.Lease))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = "referrer_sync_ledger"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.TTL == 0 {
		c.TTL = 30 * 24 * time.Hour
	}
	if c.Lease == 0 {
		c.Lease = 2 * time.Minute
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = host + "-" + strconv.Itoa(os.Getpid()) + "-" + nuid.Next()[:6]
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Ledger implements ports.Ledger and ports.People on a KV bucket.
type Ledger struct {
	kv  jetstream.KeyValue
	cfg Config
}

// New provisions the bucket idempotently (it is never deleted by the
// service) and returns the ledger.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "referrer-sync idempotency ledger: applied events and known people",
		History:     1,
		TTL:         cfg.TTL,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: provision bucket %s: %w", cfg.Bucket, err)
	}
	return &Ledger{kv: kv, cfg: cfg}, nil
}

type eventValue struct {
	Outcome      domain.Outcome `json:"outcome,omitempty"`
	ContactID    string         `json:"contact_id,omitempty"`
	At           int64          `json:"at_ms,omitempty"`
	Failures     int            `json:"failures,omitempty"`
	FirstFailure int64          `json:"first_failure_ms,omitempty"`
}

func hashKey(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return prefix + hex.EncodeToString(h.Sum(nil)[:20])
}

func eventKey(key string) string { return hashKey("ev.", key) }

// Event implements ports.Ledger.
func (l *Ledger) Event(ctx context.Context, key string) (ports.EventRecord, error) {
	v, _, err := l.event(ctx, key)
	if err != nil {
		return ports.EventRecord{}, err
	}
	return v.record(), nil
}

func (l *Ledger) event(ctx context.Context, key string) (eventValue, bool, error) {
	e, err := l.kv.Get(ctx, eventKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return eventValue{}, false, nil
	}
	if err != nil {
		return eventValue{}, false, fmt.Errorf("ledger: read event: %w", err)
	}
	var v eventValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return eventValue{}, false, fmt.Errorf("ledger: corrupt event record: %w", err)
	}
	return v, true, nil
}

func (v eventValue) record() ports.EventRecord {
	r := ports.EventRecord{Failures: v.Failures}
	if v.FirstFailure != 0 {
		r.FirstFailure = time.UnixMilli(v.FirstFailure)
	}
	if v.Outcome != "" {
		r.Done = &ports.Record{Outcome: v.Outcome, ContactID: v.ContactID, At: time.UnixMilli(v.At)}
	}
	return r
}

func (l *Ledger) putEvent(ctx context.Context, key string, v eventValue) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := l.kv.Put(ctx, eventKey(key), b); err != nil {
		return fmt.Errorf("ledger: write event: %w", err)
	}
	return nil
}

// Done implements ports.Ledger.
func (l *Ledger) Done(ctx context.Context, key string, r ports.Record) error {
	return l.putEvent(ctx, key, eventValue{Outcome: r.Outcome, ContactID: r.ContactID, At: r.At.UnixMilli()})
}

// Failed implements ports.Ledger.
func (l *Ledger) Failed(ctx context.Context, key string, at time.Time) (ports.EventRecord, error) {
	v, _, err := l.event(ctx, key)
	if err != nil {
		return ports.EventRecord{}, err
	}
	v.Failures++
	if v.FirstFailure == 0 {
		v.FirstFailure = at.UnixMilli()
	}
	if err := l.putEvent(ctx, key, v); err != nil {
		return ports.EventRecord{}, err
	}
	return v.record(), nil
}

// Clear implements ports.Ledger. It deletes the record only at the
// revision it read and only if the event is not applied, so a concurrent
// completion is never lost.
func (l *Ledger) Clear(ctx context.Context, key string) error {
	e, err := l.kv.Get(ctx, eventKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger: clear event: %w", err)
	}
	var v eventValue
	if json.Unmarshal(e.Value(), &v) == nil && v.Outcome != "" {
		return nil
	}
	err = l.kv.Delete(ctx, eventKey(key), jetstream.LastRevision(e.Revision()))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !isWrongSequence(err) && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("ledger: clear event: %w", err)
	}
	return nil
}

// Lookup returns the record of an applied event, for tests and tools.
func (l *Ledger) Lookup(ctx context.Context, key string) (ports.Record, bool, error) {
	r, err := l.Event(ctx, key)
	if err != nil || r.Done == nil {
		return ports.Record{}, false, err
	}
	return *r.Done, true, nil
}

type personValue struct {
	ContactID    string `json:"contact_id,omitempty"`
	CreatedBy    string `json:"created_by,omitempty"`
	PendingXID   string `json:"pending_external_id,omitempty"`
	Owner        string `json:"owner,omitempty"`
	LeaseEnd     int64  `json:"lease_end_ms,omitempty"`
	PendingEvent string `json:"pending_event,omitempty"`
	PendingAt    int64  `json:"pending_at_ms,omitempty"`
}

func (v personValue) person(key string, rev uint64) ports.Person {
	p := ports.Person{Key: key, Revision: rev, ContactID: v.ContactID, CreatedBy: v.CreatedBy}
	if v.PendingEvent != "" {
		p.Pending = &ports.PendingCreate{EventID: v.PendingEvent, At: time.UnixMilli(v.PendingAt), ExternalID: v.PendingXID}
	}
	return p
}

func (l *Ledger) personValue(p ports.Person, locked bool) []byte {
	v := personValue{ContactID: p.ContactID, CreatedBy: p.CreatedBy}
	if p.Pending != nil {
		v.PendingEvent, v.PendingAt, v.PendingXID = p.Pending.EventID, p.Pending.At.UnixMilli(), p.Pending.ExternalID
	}
	if locked {
		v.Owner, v.LeaseEnd = l.cfg.Owner, l.cfg.Now().Add(l.cfg.Lease).UnixMilli()
	}
	b, _ := json.Marshal(v)
	return b
}

// Lock implements ports.People. The lock is a field of the person's record:
// taking it is a create (new person) or a compare-and-set on the revision
// read, so exactly one worker wins; a lock whose lease ended is taken over.
func (l *Ledger) Lock(ctx context.Context, connection, email string) (ports.Person, error) {
	k := hashKey("p.", connection, email)
	e, err := l.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		p := ports.Person{Key: k}
		rev, err := l.kv.Create(ctx, k, l.personValue(p, true))
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
				return ports.Person{}, ports.ErrClaimHeld
			}
			return ports.Person{}, fmt.Errorf("ledger: lock person: %w", err)
		}
		p.Revision = rev
		return p, nil
	}
	if err != nil {
		return ports.Person{}, fmt.Errorf("ledger: read person: %w", err)
	}
	var v personValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return ports.Person{}, fmt.Errorf("ledger: corrupt person record: %w", err)
	}
	if v.Owner != "" && l.cfg.Now().UnixMilli() < v.LeaseEnd {
		return ports.Person{}, ports.ErrClaimHeld
	}
	p := v.person(k, 0)
	rev, err := l.kv.Update(ctx, k, l.personValue(p, true), e.Revision())
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ports.Person{}, ports.ErrClaimHeld
		}
		return ports.Person{}, fmt.Errorf("ledger: lock person: %w", err)
	}
	p.Revision = rev
	return p, nil
}

// Save implements ports.People.
func (l *Ledger) Save(ctx context.Context, p *ports.Person) error {
	rev, err := l.kv.Update(ctx, p.Key, l.personValue(*p, true), p.Revision)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ports.ErrClaimLost
		}
		return fmt.Errorf("ledger: save person: %w", err)
	}
	p.Revision = rev
	return nil
}

// Unlock implements ports.People.
func (l *Ledger) Unlock(ctx context.Context, p ports.Person) error {
	if _, err := l.kv.Update(ctx, p.Key, l.personValue(p, false), p.Revision); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ports.ErrClaimLost
		}
		return fmt.Errorf("ledger: unlock person: %w", err)
	}
	return nil
}

// PersonContact returns the contact id remembered for a person, for tests
// and tools.
func (l *Ledger) PersonContact(ctx context.Context, connection, email string) (string, error) {
	e, err := l.kv.Get(ctx, hashKey("p.", connection, email))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var v personValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return "", err
	}
	return v.ContactID, nil
}

// Forget drops what is remembered of a person, for tests and tools.
func (l *Ledger) Forget(ctx context.Context, connection, email string) error {
	err := l.kv.Delete(ctx, hashKey("p.", connection, email))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164
	}
	return false
}
