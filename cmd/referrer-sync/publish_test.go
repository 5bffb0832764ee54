package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

var publishLineRE = regexp.MustCompile(`^published \S+ to (\S+): stream (\S+) sequence (\d+) duplicate=(true|false)\n$`)

// TestPublishCommand publishes one file twice through the command: the
// second is reported, and stored, as a duplicate of the first, and the
// stored message carries the event id and the content type.
func TestPublishCommand(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")
	file := filepath.Join(t.TempDir(), "event.json")
	body := event("pub-1", "leads_update", "usr_1", "Ada", "ada@example.com")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	publish := func(t *testing.T) []string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"publish", "--config", cfg, "--file", file}, &out, &errb); code != 0 {
			t.Fatalf("publish: exit %d\n%s", code, errb.String())
		}
		m := publishLineRE.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("publish output %q does not match %s", out.String(), publishLineRE)
		}
		return m[1:]
	}
	first := publish(t)
	second := publish(t)
	if first[0] != h.in.consCfg.Subject || first[1] != h.in.consCfg.Stream || first[3] != "false" {
		t.Errorf("first publish: got subject, stream, sequence, duplicate %q; want %s, %s, n, false", first, h.in.consCfg.Subject, h.in.consCfg.Stream)
	}
	if second[2] != first[2] || second[3] != "true" {
		t.Errorf("second publish: got sequence %s duplicate=%s, want sequence %s duplicate=true", second[2], second[3], first[2])
	}
	if got := h.streamState(h.in.consCfg.Stream).Msgs; got != 1 {
		t.Errorf("stream holds %d messages, want 1", got)
	}
	if vs := h.settled(1); vs[0].Outcome != domain.OutcomeCreated {
		t.Errorf("outcome: got %s, want %s", vs[0].Outcome, domain.OutcomeCreated)
	}

	stream, err := h.js.Stream(context.Background(), h.in.consCfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(context.Background(), h.in.consCfg.Subject)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{nats.MsgIdHdr: "pub-1", "Content-Type": consumer.ContentTypeCloudEvents} {
		if got := msg.Header.Get(k); got != want {
			t.Errorf("header %s: got %q, want %q", k, got, want)
		}
	}
}
