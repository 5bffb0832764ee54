// Package hubspot is the HubSpot implementation of ports.CRM: it finds,
// creates and updates HubSpot contacts over HubSpot's CRM API, and checks
// the account's contact properties at start-up.
//
// The adapter owns everything HTTP so the application does not have to:
// the pinned API version (date-versioned paths, 2026-03 by default), pacing
// from the X-HubSpot-RateLimit-* headers and the separate search limit,
// retries with jittered backoff, and the translation of every failure into
// a *ports.Error whose Kind says what to do next.
//
// HubSpot makes exactly-once creation easier than Intercom does: a contact's
// email is unique, a create whose email is taken is refused with 409 and
// the existing id (in the message text only), and a contact can be read by
// email at once, without the search index and its lag. So the adapter
// creates first and turns a 409 into success with the existing id, and
// Find reads by email (and by a unique external id property, when one is
// configured) instead of searching. HubSpot has no idempotency key, so a
// create is still never repeated blindly: it is retried only when it
// certainly was not applied (429, 423, a failed dial), and any other
// failure after sending is Transient with Uncertain set, for the
// application to reconcile by lookup. The marker property, set on create
// and returned by Find, lets it tell its own lost create from someone
// else's contact.
//
// The kind of contact (lead or user) is its lifecyclestage: Create sets it
// from the role; Update never sends it.
//
// The token is sent only in the Authorization header. It is never part of
// an error, of the formatted Config or Client, or of a log value, and text
// that comes back from the server is scrubbed of it.
package hubspot
