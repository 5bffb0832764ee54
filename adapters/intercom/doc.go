// Package intercom is the Intercom implementation of ports.CRM: it finds,
// creates and updates Intercom contacts (leads and users) over Intercom's
// REST API, and verifies tokens and custom data attributes at start-up.
//
// The adapter owns everything HTTP so the application does not have to:
// headers and the pinned Intercom-Version, regional hosts, pagination,
// rate-limit windows (X-RateLimit-*), retries with jittered backoff, and the
// translation of every failure into a *ports.Error whose Kind says what to do
// next.
//
// Exactly-once creation is the design constraint behind the retry rules.
// Intercom has no idempotency key, and leads may share an email, so a
// POST /contacts is never blindly repeated: it is retried only when it
// certainly was not applied (a 429, or a failed dial), and any other failure
// after sending is reported as Transient with Uncertain set, so the
// application looks the contact up before trying again. A 409 conflict, the
// only server-side duplicate guard, is turned into success with the existing
// contact's id, parsed from the error message (Intercom puts it nowhere
// else).
//
// The access token is sent only in the Authorization header. It is never
// part of an error, of the formatted Config or Client, or of a log value,
// and text that comes back from the server is scrubbed of it.
package intercom
