package consumer

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/ports"
)

// Dead-letter headers. Operators and the dlq command read them.
const (
	HeaderReason          = "Referrer-Sync-Reason"
	HeaderMessage         = "Referrer-Sync-Message"
	HeaderAttempts        = "Referrer-Sync-Attempts"
	HeaderOriginalSubject = "Referrer-Sync-Original-Subject"
	HeaderStreamSequence  = "Referrer-Sync-Stream-Sequence"
	HeaderEventID         = "Referrer-Sync-Event-Id"
	HeaderCampaign        = "Referrer-Sync-Campaign"
	HeaderFailedAt        = "Referrer-Sync-Failed-At"       // the last failure
	HeaderFirstFailedAt   = "Referrer-Sync-First-Failed-At" // the first failure
)

// isOwnHeader reports whether a header name is one a dead letter's own
// account is written to, in any case.
func isOwnHeader(name string) bool {
	for _, h := range [...]string{HeaderReason, HeaderMessage, HeaderAttempts, HeaderOriginalSubject, HeaderStreamSequence,
		HeaderEventID, HeaderCampaign, HeaderFailedAt, HeaderFirstFailedAt} {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// DeadLetters publishes dead letters to the dead-letter stream and waits for
// the stream to store them before the original is acknowledged, so a
// message is never acked without being kept somewhere.
type DeadLetters struct {
	js      jetstream.JetStream
	subject string
	stream  string
}

// NewDeadLetters returns a ports.DeadLetters on the configured subject.
func NewDeadLetters(js jetstream.JetStream, cfg Config) *DeadLetters {
	cfg.setDefaults()
	return &DeadLetters{js: js, subject: cfg.DeadLetterSubject, stream: cfg.Stream}
}

// DeadLetter implements ports.DeadLetters. The message id is derived from
// the original stream and sequence, so a redelivered message that is
// dead-lettered twice is stored once.
func (d *DeadLetters) DeadLetter(ctx context.Context, dl ports.DeadLetter) error {
	msg := nats.NewMsg(d.subject)
	msg.Data = dl.Body
	for k, vs := range dl.Headers {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "nats-") {
			continue // server-interpreted headers (message id, expectations) must not steer the dead letter
		}
		if isOwnHeader(k) {
			continue // an earlier dead letter's account, replayed: this one's replaces it
		}
		// Exactly as received: the name's case and every value.
		msg.Header[k] = slices.Clone(vs)
	}
	msg.Header.Set(HeaderReason, dl.Reason)
	msg.Header.Set(HeaderMessage, truncate(dl.Message, 1024))
	msg.Header.Set(HeaderAttempts, strconv.Itoa(dl.Attempts))
	msg.Header.Set(HeaderOriginalSubject, dl.Subject)
	msg.Header.Set(HeaderStreamSequence, strconv.FormatUint(dl.Sequence, 10))
	msg.Header.Set(HeaderEventID, dl.EventID)
	msg.Header.Set(HeaderCampaign, dl.Campaign)
	msg.Header.Set(HeaderFailedAt, dl.Failed.UTC().Format(time.RFC3339Nano))
	first := dl.FirstSeen
	if first.IsZero() || first.After(dl.Failed) {
		first = dl.Failed // it failed once: first and last are the same
	}
	msg.Header.Set(HeaderFirstFailedAt, first.UTC().Format(time.RFC3339Nano))
	if dl.Sequence != 0 {
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s:%d", d.stream, dl.Sequence))
	}
	if _, err := d.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("consumer: publish dead letter: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
