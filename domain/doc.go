// Package domain is referrer-sync's decision core: what a referrer.joined
// event is, what a campaign asks for (action, field mapping, duplicate
// policy), and what to do about a contact that already exists.
//
// It is deliberately pure: standard library only, no I/O, no context, no
// logging. Everything here is a function of its inputs, so the rules that
// decide whether a person becomes an Intercom lead or user can be tested
// exhaustively with tables and fuzzed without a network.
package domain
