package ports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// CRM is one CRM connection (an Intercom workspace, say). Implementations
// must be safe for concurrent use.
type CRM interface {
	// Find returns the contacts that match the identity: by external id
	// when one is given, and by email across every role. An empty result is
	// not an error.
	Find(ctx context.Context, id domain.Identity) ([]domain.Match, error)
	// Create creates the contact. When the CRM refuses because a matching
	// contact exists (Intercom's 409 conflict), Create returns that
	// contact's id with Existing set, not an error.
	Create(ctx context.Context, c domain.Contact) (Created, error)
	// Update writes the set fields of c onto the contact with the given id.
	Update(ctx context.Context, id string, c domain.Contact) error
}

// Created is the result of CRM.Create.
type Created struct {
	ID       string
	Existing bool // the CRM already had a matching contact; nothing was created
}

// ErrorKind classifies a CRM failure by what the caller should do about it.
type ErrorKind int

// Error kinds.
const (
	// Transient failures (5xx, timeouts, connection errors) may succeed on
	// a later attempt.
	Transient ErrorKind = iota + 1
	// RateLimited means the CRM's budget is spent until RetryAfter.
	RateLimited
	// Permanent failures (400, 422) will fail the same way every time.
	Permanent
	// Unauthorized (401, 403) is a configuration problem: the token is
	// wrong or lacks a permission. Retrying does not help until an operator
	// acts, but the event is not at fault either.
	Unauthorized
	// NotFound means the contact addressed no longer exists.
	NotFound
)

func (k ErrorKind) String() string {
	switch k {
	case Transient:
		return "transient"
	case RateLimited:
		return "rate_limited"
	case Permanent:
		return "permanent"
	case Unauthorized:
		return "unauthorized"
	case NotFound:
		return "not_found"
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// Error is a classified CRM failure. Adapters return it (wrapped or not) so
// the application can branch with errors.As without knowing HTTP.
type Error struct {
	Op         string // e.g. "create", "search"
	Kind       ErrorKind
	Status     int    // HTTP status, 0 when no response arrived
	Code       string // the CRM's error code, e.g. "parameter_invalid"
	Message    string // the CRM's message; adapters must not put tokens here
	RetryAfter time.Duration
	// Uncertain is set when a write was sent and may have been applied
	// although no success was seen (timeout, connection reset, 5xx).
	Uncertain bool
	Err       error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("crm %s: %s", e.Op, e.Kind)
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d", e.Status)
		if e.Code != "" {
			msg += " " + e.Code
		}
		msg += ")"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of a CRM error, and Transient for any error that
// is not an *Error: an unknown failure is retried, never dropped.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Transient
}
