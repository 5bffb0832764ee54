// Package ports holds the small interfaces at the edge of the hexagon: what
// the application needs from a CRM, from the idempotency ledger, from the
// dead-letter stream and from metrics. The application is their only
// consumer; adapters implement them. It imports the domain and the standard
// library only.
//
// Readers coming from Wild Workouts: there "ports" are inbound HTTP/gRPC
// handlers. Here, as in Cockburn's original, ports are the interfaces
// themselves, inbound and outbound implementations both live in adapters.
package ports
