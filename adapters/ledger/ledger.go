// Package ledger is the durable idempotency ledger in a NATS JetStream
// key-value bucket: which events were applied (ports.Ledger) and which CRM
// contact each person is (ports.People).
//
// Claims are atomic: a claim is a KV create, which succeeds for exactly one
// writer; a takeover of an expired claim and the final record are
// compare-and-set updates on the revision the claimant saw. Keys are hashes,
// so no event id or email appears in the bucket's keys.
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
	// Lease is how long a claim stays exclusive without a result. After
	// it, another worker may take the event over (its holder crashed). It
	// must exceed the longest processing of one event. Default 2 minutes.
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

const (
	stateClaimed = "claimed"
	stateDone    = "done"
)

type eventValue struct {
	State     string         `json:"state"`
	Owner     string         `json:"owner,omitempty"`
	LeaseEnd  int64          `json:"lease_end_ms,omitempty"`
	Outcome   domain.Outcome `json:"outcome,omitempty"`
	ContactID string         `json:"contact_id,omitempty"`
	At        int64          `json:"at_ms"`
}

func hashKey(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return prefix + hex.EncodeToString(h.Sum(nil)[:20])
}

func (l *Ledger) claimValue() []byte {
	now := l.cfg.Now()
	b, _ := json.Marshal(eventValue{State: stateClaimed, Owner: l.cfg.Owner, LeaseEnd: now.Add(l.cfg.Lease).UnixMilli(), At: now.UnixMilli()})
	return b
}

// Claim implements ports.Ledger.
func (l *Ledger) Claim(ctx context.Context, key string) (ports.Claim, error) {
	k := hashKey("ev.", key)
	for range 3 {
		rev, err := l.kv.Create(ctx, k, l.claimValue())
		if err == nil {
			return ports.Claim{Key: k, Revision: rev}, nil
		}
		// Exists, or lost a race on a delete marker: read what is there.
		e, gerr := l.kv.Get(ctx, k)
		if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			continue // released in between; try the create again
		}
		if gerr != nil {
			return ports.Claim{}, fmt.Errorf("ledger: read claim: %w", errors.Join(err, gerr))
		}
		var v eventValue
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return ports.Claim{}, fmt.Errorf("ledger: corrupt record for %s: %w", k, err)
		}
		if v.State == stateDone {
			return ports.Claim{Key: k, Revision: e.Revision(), Done: &ports.Record{
				Outcome: v.Outcome, ContactID: v.ContactID, At: time.UnixMilli(v.At),
			}}, nil
		}
		if l.cfg.Now().UnixMilli() < v.LeaseEnd {
			return ports.Claim{}, ports.ErrClaimHeld
		}
		// The holder's lease ran out (it crashed or stalled): take over,
		// but only if nobody else did first.
		rev, err = l.kv.Update(ctx, k, l.claimValue(), e.Revision())
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
				return ports.Claim{}, ports.ErrClaimHeld
			}
			return ports.Claim{}, fmt.Errorf("ledger: take over claim: %w", err)
		}
		return ports.Claim{Key: k, Revision: rev}, nil
	}
	return ports.Claim{}, ports.ErrClaimHeld
}

// Complete implements ports.Ledger.
func (l *Ledger) Complete(ctx context.Context, c ports.Claim, r ports.Record) error {
	b, err := json.Marshal(eventValue{State: stateDone, Outcome: r.Outcome, ContactID: r.ContactID, At: r.At.UnixMilli()})
	if err != nil {
		return err
	}
	if _, err := l.kv.Update(ctx, c.Key, b, c.Revision); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ports.ErrClaimLost
		}
		return fmt.Errorf("ledger: record result: %w", err)
	}
	return nil
}

// Release implements ports.Ledger.
func (l *Ledger) Release(ctx context.Context, c ports.Claim) error {
	err := l.kv.Delete(ctx, c.Key, jetstream.LastRevision(c.Revision))
	if err != nil && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
		return nil // someone else holds it now; nothing of ours to release
	}
	if err != nil {
		return fmt.Errorf("ledger: release claim: %w", err)
	}
	return nil
}

// Lookup returns the record of an applied event, for tests and tools.
func (l *Ledger) Lookup(ctx context.Context, key string) (ports.Record, bool, error) {
	e, err := l.kv.Get(ctx, hashKey("ev.", key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ports.Record{}, false, nil
	}
	if err != nil {
		return ports.Record{}, false, err
	}
	var v eventValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return ports.Record{}, false, err
	}
	if v.State != stateDone {
		return ports.Record{}, false, nil
	}
	return ports.Record{Outcome: v.Outcome, ContactID: v.ContactID, At: time.UnixMilli(v.At)}, true, nil
}

type personValue struct {
	ContactID string `json:"contact_id"`
}

// Contact implements ports.People.
func (l *Ledger) Contact(ctx context.Context, connection string, person domain.Identity) (string, bool, error) {
	e, err := l.kv.Get(ctx, hashKey("p.", connection, person.Key()))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("ledger: read person: %w", err)
	}
	var v personValue
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.ContactID == "" {
		return "", false, nil
	}
	return v.ContactID, true, nil
}

// Remember implements ports.People. An empty contactID forgets the person.
func (l *Ledger) Remember(ctx context.Context, connection string, person domain.Identity, contactID string) error {
	k := hashKey("p.", connection, person.Key())
	if contactID == "" {
		if err := l.kv.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("ledger: forget person: %w", err)
		}
		return nil
	}
	b, _ := json.Marshal(personValue{ContactID: contactID})
	if _, err := l.kv.Put(ctx, k, b); err != nil {
		return fmt.Errorf("ledger: remember person: %w", err)
	}
	return nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164
	}
	return false
}
