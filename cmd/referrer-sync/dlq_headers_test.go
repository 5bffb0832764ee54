package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

// TestDLQBinaryModeHeadersRoundTrip dead-letters a binary-mode CloudEvent
// whose headers have mixed-case names and a repeated value, then shows and
// replays it: `dlq show` prints every original header with its name and
// every value as sent, and the replayed message carries them byte for byte.
func TestDLQBinaryModeHeadersRoundTrip(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")
	original := nats.Header{
		"Ce-Specversion": {"1.0"},
		"ce-id":          {"bin-1"},
		"CE-Type":        {"referrer.joined"},
		"Ce-Source":      {"/campaigns/leads_update"},
		"Content-Type":   {"application/json"},
		"X-Trace-Id":     {"trace-a", "trace-b", "trace-a"},
		"x-trace-id":     {"lower"},
		"Traceparent":    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
	msg := nats.NewMsg(h.in.consCfg.Subject)
	msg.Data = []byte(`{"campaign_id":"leads_update","referrer":{"id":"usr_bin","first_name":"Bin","email":"not-an-email"}}`)
	for k, vs := range original {
		msg.Header[k] = slices.Clone(vs)
	}
	msg.Header[nats.MsgIdHdr] = []string{"bin-1"}
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	v := h.settled(1)[0]
	if v.Outcome != domain.OutcomeDeadLettered || v.EventID != "bin-1" {
		t.Fatalf("got %s for %q (%s: %v), want bin-1 dead-lettered", v.Outcome, v.EventID, v.Reason, v.Err)
	}

	out, errOut, code := dlqCmd("show", "--config", cfg, "--id", "bin-1")
	if code != 0 {
		t.Fatalf("show: exit code %d, stderr %q", code, errOut)
	}
	var shown []string
	for line := range strings.SplitSeq(out, "\n") {
		if name, value, ok := strings.Cut(strings.TrimPrefix(line, "  "), ": "); ok && strings.HasPrefix(line, "  ") {
			if _, orig := original[name]; orig {
				shown = append(shown, name+": "+value)
			}
		}
	}
	var want []string
	for _, k := range slices.Sorted(maps.Keys(original)) {
		for _, v := range original[k] {
			want = append(want, k+": "+v)
		}
	}
	if !slices.Equal(shown, want) {
		t.Errorf("dlq show headers:\n got %q\nwant %q\nin:\n%s", shown, want, out)
	}

	out, errOut, code = dlqCmd("replay", "--config", cfg, "--id", "bin-1")
	if code != 0 {
		t.Fatalf("replay: exit code %d, stderr %q", code, errOut)
	}
	row, ok := replayRows(t, out)["bin-1"]
	if !ok {
		t.Fatalf("no replay row for bin-1 in:\n%s", out)
	}
	s, err := h.js.Stream(context.Background(), h.in.consCfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetMsg(context.Background(), row.seq)
	if err != nil {
		t.Fatal(err)
	}
	dlSeq := h.dlqSeqs()["bin-1"]
	wantReplay := nats.Header{
		replayedFromHeader: {fmt.Sprint(dlSeq[0])},
		nats.MsgIdHdr:      {fmt.Sprintf("replay-%s-%d", h.in.consCfg.DeadLetterStream, dlSeq[0])},
	}
	for k, vs := range original {
		wantReplay[k] = vs
	}
	for k, vs := range wantReplay {
		if !slices.Equal(got.Header[k], vs) {
			t.Errorf("replayed header %q: got %q, want %q", k, got.Header[k], vs)
		}
	}
	for k := range got.Header {
		if _, ok := wantReplay[k]; !ok {
			t.Errorf("replayed header %q: unexpected (%q)", k, got.Header[k])
		}
	}
	if string(got.Data) != string(msg.Data) {
		t.Errorf("replayed body: got %q, want %q", got.Data, msg.Data)
	}
}
