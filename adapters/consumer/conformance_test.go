package consumer_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/conformance"
)

// TestDeadLettersConformance runs the dead-letter port's contract against
// the JetStream dead letters on a real embedded server.
func TestDeadLettersConformance(t *testing.T) {
	conformance.DeadLetters(t, func(t *testing.T) conformance.DeadLettersHarness {
		srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
		if err != nil {
			t.Fatalf("embedded nats: %v", err)
		}
		t.Cleanup(srv.Shutdown)
		nc, err := nats.Connect(srv.URL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		cfg := consumer.Config{Stream: "CONF", Subject: "conf.joined", Consumer: "conf"}.WithDefaults()
		if err := consumer.Provision(t.Context(), js, cfg, nil); err != nil {
			t.Fatalf("provision: %v", err)
		}
		return conformance.DeadLettersHarness{
			DeadLetters: consumer.NewDeadLetters(js, cfg),
			Stored:      func(t *testing.T) []ports.DeadLetter { return readDeadLetters(t, js, cfg.DeadLetterStream) },
			Break: func() {
				if err := js.DeleteStream(t.Context(), cfg.DeadLetterStream); err != nil {
					t.Fatalf("delete the dead-letter stream: %v", err)
				}
			},
			// The message id is the original's stream and sequence, inside
			// the stream's duplicate window.
			DedupBySequence: true,
		}
	})
}

// readDeadLetters reads every message of the dead-letter stream back into
// the port's shape, from the headers the adapter documents.
func readDeadLetters(t *testing.T, js jetstream.JetStream, stream string) []ports.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []ports.DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		out = append(out, decodeDeadLetter(t, m))
	}
	return out
}

func decodeDeadLetter(t *testing.T, m *jetstream.RawStreamMsg) ports.DeadLetter {
	t.Helper()
	h := m.Header
	d := ports.DeadLetter{
		Body:     m.Data,
		Reason:   h.Get(consumer.HeaderReason),
		Message:  h.Get(consumer.HeaderMessage),
		Subject:  h.Get(consumer.HeaderOriginalSubject),
		EventID:  h.Get(consumer.HeaderEventID),
		Campaign: h.Get(consumer.HeaderCampaign),
	}
	var err error
	if d.Attempts, err = strconv.Atoi(h.Get(consumer.HeaderAttempts)); err != nil {
		t.Errorf("attempts header: %v", err)
	}
	if d.Sequence, err = strconv.ParseUint(h.Get(consumer.HeaderStreamSequence), 10, 64); err != nil {
		t.Errorf("sequence header: %v", err)
	}
	if d.Failed, err = time.Parse(time.RFC3339Nano, h.Get(consumer.HeaderFailedAt)); err != nil {
		t.Errorf("failed-at header: %v", err)
	}
	if d.FirstSeen, err = time.Parse(time.RFC3339Nano, h.Get(consumer.HeaderFirstFailedAt)); err != nil {
		t.Errorf("first-failed-at header: %v", err)
	}
	own := map[string]bool{}
	for _, k := range []string{consumer.HeaderReason, consumer.HeaderMessage, consumer.HeaderAttempts, consumer.HeaderOriginalSubject,
		consumer.HeaderStreamSequence, consumer.HeaderEventID, consumer.HeaderCampaign, consumer.HeaderFailedAt, consumer.HeaderFirstFailedAt} {
		own[k] = true
	}
	for k, vs := range h {
		if own[k] || strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		if d.Headers == nil {
			d.Headers = map[string][]string{}
		}
		d.Headers[k] = vs
	}
	return d
}
