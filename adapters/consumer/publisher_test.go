package consumer

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publisherStream gives a test a stream of its own on a fresh server.
func publisherStream(t *testing.T) (*Publisher, jetstream.Stream) {
	t.Helper()
	nc, js := connect(t, testServer(t))
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	return p, s
}

func TestPublisherDeduplicatesAndReports(t *testing.T) {
	type pub struct {
		subject string
		id      string
		headers map[string]string
		want    Receipt
	}
	cases := []struct {
		name   string
		pubs   []pub
		stored uint64
	}{
		{
			name: "same id twice is stored once",
			pubs: []pub{
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupNo}},
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupYes}},
			},
			stored: 1,
		},
		{
			name: "a Nats-Msg-Id header stands in for an empty id",
			pubs: []pub{
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupNo}},
				{subject: "p.a", headers: map[string]string{nats.MsgIdHdr: "evt-1"}, want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupYes}},
			},
			stored: 1,
		},
		{
			name: "without an id every publish is stored",
			pubs: []pub{
				{subject: "p.a", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupNo}},
				{subject: "p.a", want: Receipt{Stream: "P", Sequence: 2, Duplicate: DupNo}},
			},
			stored: 2,
		},
		{
			name: "distinct ids are stored apart",
			pubs: []pub{
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupNo}},
				{subject: "p.a", id: "evt-2", want: Receipt{Stream: "P", Sequence: 2, Duplicate: DupNo}},
			},
			stored: 2,
		},
		{
			name: "a duplicate hidden by a later message has no sequence",
			pubs: []pub{
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupNo}},
				{subject: "p.a", id: "evt-2", want: Receipt{Stream: "P", Sequence: 2, Duplicate: DupNo}},
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 0, Duplicate: DupYes}},
			},
			stored: 2,
		},
		{
			name: "a duplicate is found on its own subject while others grow the stream",
			pubs: []pub{
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupNo}},
				{subject: "p.b", id: "evt-2", want: Receipt{Stream: "P", Sequence: 2, Duplicate: DupNo}},
				{subject: "p.a", id: "evt-1", want: Receipt{Stream: "P", Sequence: 1, Duplicate: DupYes}},
			},
			stored: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, s := publisherStream(t)
			ctx := context.Background()
			for i, pb := range tc.pubs {
				got, err := p.Publish(ctx, pb.subject, []byte(`{"n":1}`), pb.id, pb.headers)
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				if got != pb.want {
					t.Errorf("publish %d: got %+v, want %+v", i, got, pb.want)
				}
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != tc.stored {
				t.Errorf("stream holds %d messages, want %d", info.State.Msgs, tc.stored)
			}
		})
	}
}

func TestPublisherHeadersArrive(t *testing.T) {
	p, s := publisherStream(t)
	ctx := context.Background()
	body := []byte(`{"specversion":"1.0","id":"evt-9"}`)
	headers := map[string]string{"Content-Type": ContentTypeCloudEvents, "X-Trace": "abc"}
	r, err := p.Publish(ctx, "p.a", body, "evt-9", headers)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, r.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != string(body) {
		t.Errorf("body: got %q, want %q", m.Data, body)
	}
	for k, want := range map[string]string{
		"Content-Type": ContentTypeCloudEvents,
		"X-Trace":      "abc",
		nats.MsgIdHdr:  "evt-9",
	} {
		if got := m.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("header %s: got %q, want [%q]", k, got, want)
		}
	}
}

func TestPublisherErrors(t *testing.T) {
	p, _ := publisherStream(t)
	if _, err := p.Publish(context.Background(), "nowhere", []byte("x"), "evt-1", nil); err == nil {
		t.Error("publish to a subject no stream captures: got nil error")
	}
	if _, err := NewPublisher(nil); err == nil {
		t.Error("NewPublisher(nil): got nil error")
	}
}
