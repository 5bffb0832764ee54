package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ContentTypeCloudEvents is the Content-Type of a structured-mode CloudEvent.
const ContentTypeCloudEvents = "application/cloudevents+json"

// publishTimeout bounds a publish whose context has no deadline: a JetStream
// publish waits for the stream's acknowledgement, which never comes when no
// stream is listening.
const publishTimeout = 10 * time.Second

// Publisher publishes events to JetStream through watermill-nats's
// JetStream publisher (pkg/nats with TrackMsgId), the package its
// maintainers call stable; the pkg/jetstream publisher of v2.1.3 never sets
// Nats-Msg-Id. The message id becomes the Watermill message UUID, which that
// publisher sends as Nats-Msg-Id, so a publish repeated within the stream's
// duplicate window is stored once.
//
// The stored message also carries the header _watermill_message_uuid
// (equal to the message id), which watermill-nats adds to every message.
//
// Watermill's Publish reports only an error, not JetStream's
// acknowledgement, so the Receipt comes from looking the stream up: see
// Receipt for what it can tell. That costs three or four requests besides
// the publish, which suits the publish command and the demo; the service's
// dead letters and replays publish with the NATS client directly.
type Publisher struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// NewPublisher returns a Publisher on nc. The caller keeps nc and closes it
// after the last Publish.
func NewPublisher(nc *nats.Conn) (*Publisher, error) {
	if nc == nil {
		return nil, errors.New("consumer: publisher needs a NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("consumer: jetstream: %w", err)
	}
	return &Publisher{nc: nc, js: js}, nil
}

// Dup says whether JetStream stored a publish or dropped it as a duplicate.
type Dup int

// Dup values.
const (
	DupUnknown Dup = iota // another publish on the subject hid the answer
	DupNo                 // stored as a new message
	DupYes                // dropped: the stream already held the message id
)

// String is how the publish command prints it: "true", "false" or
// "unknown".
func (d Dup) String() string {
	switch d {
	case DupNo:
		return "false"
	case DupYes:
		return "true"
	default:
		return "unknown"
	}
}

// Receipt is what a publish did, as far as the stream shows it. Publish
// reads the stream's last sequence before publishing and the subject's last
// message after: when that message carries the published id the answer is
// exact (its sequence; a duplicate if it was there before). When another
// message on the subject came in between, Sequence is 0, and Duplicate is
// DupYes if the stream stored nothing at all, else DupUnknown. A publish
// racing another publisher that sends the same id can be reported as new.
type Receipt struct {
	Stream    string
	Sequence  uint64 // 0 when unknown
	Duplicate Dup
}

// Publish publishes body to subject with msgID as its JetStream message id
// and headers as NATS headers. An empty msgID falls back to a Nats-Msg-Id
// among the headers, else the message has no id and is never deduplicated;
// a non-empty msgID wins over that header. Publish returns once the stream
// acknowledged the message.
func (p *Publisher) Publish(ctx context.Context, subject string, body []byte, msgID string, headers map[string]string) (Receipt, error) {
	if msgID == "" {
		msgID = headers[nats.MsgIdHdr]
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, publishTimeout)
		defer cancel()
	}
	name, err := p.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return Receipt{}, fmt.Errorf("consumer: no stream for subject %s: %w", subject, err)
	}
	stream, err := p.js.Stream(ctx, name)
	if err != nil {
		return Receipt{}, fmt.Errorf("consumer: stream %s: %w", name, err)
	}
	before := stream.CachedInfo().State.LastSeq

	// A watermill publisher per call: its JetStream options, which carry the
	// context, are fixed when it is made. Making one is cheap (no round
	// trip); it is not closed, because closing it would close nc.
	wp, err := wmnats.NewPublisherWithNatsConn(p.nc, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream: wmnats.JetStreamConfig{
			TrackMsgId:     true,
			PublishOptions: []nats.PubOpt{nats.Context(ctx)},
		},
	}, nil)
	if err != nil {
		return Receipt{}, fmt.Errorf("consumer: watermill publisher: %w", err)
	}
	msg := message.NewMessage(msgID, body)
	for k, v := range headers {
		msg.Metadata.Set(k, v)
	}
	if err := wp.Publish(subject, msg); err != nil {
		return Receipt{}, fmt.Errorf("consumer: publish to %s: %w", subject, err)
	}
	return p.receipt(ctx, stream, subject, msgID, before)
}

// receipt looks up what the publish of msgID did; see Receipt.
func (p *Publisher) receipt(ctx context.Context, stream jetstream.Stream, subject, msgID string, before uint64) (Receipt, error) {
	r := Receipt{Stream: stream.CachedInfo().Config.Name}
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return r, fmt.Errorf("consumer: published to %s, but looking it up failed: %w", subject, err)
	}
	if msgID != "" && last.Header.Get(nats.MsgIdHdr) == msgID {
		r.Sequence = last.Sequence
		r.Duplicate = DupNo
		if last.Sequence <= before {
			r.Duplicate = DupYes
		}
		return r, nil
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return r, fmt.Errorf("consumer: published to %s, but looking it up failed: %w", subject, err)
	}
	switch {
	case msgID == "":
		// Without an id it is never a duplicate; the subject's last message
		// is ours if the stream stored nothing else meanwhile.
		r.Duplicate = DupNo
		if info.State.LastSeq == before+1 && last.Sequence == before+1 {
			r.Sequence = last.Sequence
		}
	case info.State.LastSeq == before:
		r.Duplicate = DupYes
	}
	return r, nil
}
