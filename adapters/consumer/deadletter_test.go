package consumer

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/ports"
)

func natsMsg(subject string, h map[string][]string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(`{"campaign_id":"c"}`)
	for k, vs := range h {
		m.Header[k] = slices.Clone(vs)
	}
	return m
}

// assertHeaders checks that got has exactly want's names (case included)
// and values (every one, in order).
func assertHeaders(t *testing.T, got, want map[string][]string) {
	t.Helper()
	for k, vs := range want {
		if !slices.Equal(got[k], vs) {
			t.Errorf("header %q: got %q, want %q", k, got[k], vs)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("header %q: unexpected (value %q)", k, got[k])
		}
	}
}

// TestDeadLetterKeepsTheOriginalHeaders delivers a binary-mode message with
// mixed-case and repeated headers through the consumer to an application
// that dead-letters it: the dead letter has every original header exactly,
// beside the service's own account, and no server-interpreted header of
// the original.
func TestDeadLetterKeepsTheOriginalHeaders(t *testing.T) {
	url := testServer(t)
	nc, js := connect(t, url)
	cfg := testConfig()
	if err := Provision(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	original := map[string][]string{
		"ce-specversion": {"1.0"},
		"Ce-Id":          {"evt-1"},
		"CE-TYPE":        {"referrer.joined"},
		"Content-Type":   {"application/json"},
		"X-Trace-Id":     {"first", "second", "first"},
		"x-trace-id":     {"lower"},
		"X-Empty":        {""},
	}
	msg := natsMsg(cfg.Subject, original)
	msg.Header["Nats-Msg-Id"] = []string{"publisher-id"}
	msg.Header["Referrer-Sync-Reason"] = []string{"an earlier dead letter's"}
	msg.Header["Referrer-Sync-Replayed-From"] = []string{"7"}
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	dl := NewDeadLetters(js, cfg)
	done := make(chan error, 1)
	runConsumer(t, url, cfg, handlerFunc(func(ctx context.Context, m app.Message) app.Verdict {
		done <- dl.DeadLetter(ctx, ports.DeadLetter{Body: m.Body, Headers: m.OriginalHeaders, Reason: "malformed", Message: "bad",
			Attempts: m.Attempt, Subject: m.Subject, Sequence: m.Sequence, EventID: "evt-1", Campaign: "c", Failed: time.Now()})
		return app.Verdict{Outcome: "dead_lettered"}
	}))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), cfg.WithDefaults().DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"Referrer-Sync-Replayed-From": {"7"}}
	for k, vs := range original {
		want[k] = vs
	}
	for _, k := range []string{HeaderReason, HeaderMessage, HeaderAttempts, HeaderOriginalSubject, HeaderStreamSequence,
		HeaderEventID, HeaderCampaign, HeaderFailedAt, HeaderFirstFailedAt, nats.MsgIdHdr} {
		want[k] = got.Header[k]
	}
	assertHeaders(t, got.Header, want)
	if got.Header.Get(HeaderReason) != "malformed" || got.Header.Get(nats.MsgIdHdr) != "T:1" {
		t.Errorf("own headers: reason %q, message id %q; want malformed, T:1", got.Header.Get(HeaderReason), got.Header.Get(nats.MsgIdHdr))
	}
	if string(got.Data) != string(msg.Data) {
		t.Errorf("body: got %q, want %q", got.Data, msg.Data)
	}
}
