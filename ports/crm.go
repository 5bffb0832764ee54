package ports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// CRM is one CRM connection (an Intercom workspace, a HubSpot account).
// Implementations must be safe for concurrent use.
//
// Contract, which every implementation keeps (the application relies on
// each point; ports/conformance.CRM checks them against the in-memory CRM
// and against each adapter with its emulator):
//   - Failures are *Error (wrapped or not), whose Kind says what to do:
//     Transient (a 5xx, a timeout, a reset: try again later), RateLimited
//     (the CRM's budget is spent: come back after RetryAfter, which is
//     set), Permanent (refused as it is, e.g. an unknown custom field: it
//     fails the same way every time), Unauthorized (the credential is
//     refused or lacks a permission: an operator must act), and NotFound
//     (Update only). An error that is not an *Error counts as Transient
//     (KindOf), so it is retried, never dropped.
//   - Uncertain marks the error of a write that was sent and may have been
//     applied (its answer lost, a timeout or a 5xx after sending). Any
//     other error means nothing was applied: RateLimited, Permanent and
//     Unauthorized are always certain.
//   - ctx bounds the call. Once ctx is done nothing more is sent, and the
//     call fails with an error wrapping ctx's error. A create in particular
//     is never sent after its ctx's deadline — not first, not as a retry,
//     not after waiting for a rate-limit turn that would come later — so
//     that once the deadline has passed, the create was either sent before
//     it or never will be: the application bounds a pending create's lease
//     by that deadline. A write cut off in flight is Uncertain.
//   - An implementation repeats internally only what is safe to repeat:
//     reads and updates, and a create only when it certainly was not
//     applied (a 429, a failed dial).
type CRM interface {
	// Find returns the contacts that match the identity: the user with
	// the external id (when the connection knows external ids; a
	// consistent lookup, so a user created a moment ago is found), every
	// contact, lead or user, with the email, and the contact whose marker
	// is id.Marker. Each match carries the marker its create stored
	// (Match.Marker), so the application can tell its own lost create
	// from someone else's contact: a contact created with Marker m is
	// found by an identity with Marker m that names nothing else or names
	// the email (or external id) the create carried. Lookups by email and
	// marker may go through a search that lags behind writes (the
	// connection's search lag), which the application waits out before it
	// takes an absence as proof. Nobody matching is an empty result, not an
	// error; an identity with nothing to look up by is Permanent, never an
	// empty result that would invite a blind create.
	Find(ctx context.Context, id domain.Identity) ([]domain.Match, error)
	// Create creates the contact as c.Role (lead or user), storing
	// c.Marker on it, when set, for Find. When the CRM already has a
	// matching contact and refuses a second (a user with the same email or
	// external id; any contact with the same email where emails are
	// unique, as in HubSpot; Intercom's and HubSpot's 409), Create returns
	// that contact's id with Existing set, not an error, whether or not
	// search shows the contact yet. A contact that carries c.Marker is
	// this create's own, applied by an earlier attempt whose answer was
	// lost: an implementation that can tell returns it with Existing
	// false. Concurrent creates of one user make one contact. Where the
	// CRM lets leads share an email (Intercom), a second lead is a second
	// contact. A failure after the request was sent is Transient and
	// Uncertain, and the application looks the contact up by its marker
	// before it creates again.
	Create(ctx context.Context, c domain.Contact) (Created, error)
	// Update writes the set fields of c onto the contact with the given
	// id, leaving the others alone. It never changes the contact's kind
	// (c.Role is ignored) nor its marker (c.Marker is ignored: it names the
	// event that created the contact). A contact that no longer exists
	// (deleted, merged away) is NotFound, so the application forgets it
	// and looks the person up again. An update may be repeated.
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
