package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

// dlqConfig writes a configuration file for the dlq command that points at
// the harness's NATS server; natsYAML adds lines under nats:. NATS_URL is
// set too, because the harness sets it empty and an empty NATS_URL
// overrides the file.
func (h *harness) dlqConfig(t *testing.T, natsYAML string) string {
	t.Helper()
	url := h.in.server.URL()
	t.Setenv("NATS_URL", url)
	doc := fmt.Sprintf("nats:\n  url: %q\n%s\nconnections:\n  main:\n    type: intercom\n    base_url: %q\n    access_token_env: %s\n%s",
		url, natsYAML, h.in.file.Connections["main"].BaseURL, testTokenEnv, e2eCampaigns)
	path := filepath.Join(t.TempDir(), "dlq.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dlqCmd runs `referrer-sync dlq ARGS...` through the command switch.
func dlqCmd(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"dlq"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// putDeadLetter stores a message on the dead-letter subject as the service
// would, to stand for a dead letter whose cause has since been fixed.
func (h *harness) putDeadLetter(body, eventID, campaign, reason string) uint64 {
	h.t.Helper()
	msg := nats.NewMsg(h.in.consCfg.DeadLetterSubject)
	msg.Data = []byte(body)
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	msg.Header.Set(consumer.HeaderReason, reason)
	msg.Header.Set(consumer.HeaderMessage, "simulated")
	msg.Header.Set(consumer.HeaderAttempts, "3")
	msg.Header.Set(consumer.HeaderOriginalSubject, h.in.consCfg.Subject)
	msg.Header.Set(consumer.HeaderStreamSequence, "1")
	msg.Header.Set(consumer.HeaderEventID, eventID)
	msg.Header.Set(consumer.HeaderCampaign, campaign)
	msg.Header.Set(consumer.HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	ack, err := h.js.PublishMsg(context.Background(), msg)
	if err != nil {
		h.t.Fatalf("put dead letter: %v", err)
	}
	return ack.Sequence
}

func (h *harness) streamState(name string) jetstream.StreamState {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), name)
	if err != nil {
		h.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State
}

// dlqMessages reads the dead-letter stream message by message, skipping
// deleted ones (h.deadLetters does not expect any).
func (h *harness) dlqMessages() []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.js.Stream(ctx, h.in.consCfg.DeadLetterStream)
	if err != nil {
		h.t.Fatalf("dlq stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatalf("dlq message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// dlqSeqs returns the sequences on the dead-letter stream, by event id.
func (h *harness) dlqSeqs() map[string][]uint64 {
	h.t.Helper()
	out := map[string][]uint64{}
	for _, m := range h.dlqMessages() {
		id := m.Header.Get(consumer.HeaderEventID)
		out[id] = append(out[id], m.Sequence)
	}
	return out
}

// headerValue is a header's value with its name matched without regard to
// case: the service keeps original headers lower-cased.
func headerValue(h nats.Header, name string) string {
	for k, vs := range h {
		if strings.EqualFold(k, name) {
			return strings.Join(vs, ",")
		}
	}
	return ""
}

// listRows parses `dlq list` table output into "reason/event/campaign"
// keys, sorted, and returns the count line.
func listRows(t *testing.T, out string) ([]string, string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	countLine := lines[len(lines)-1]
	var rows []string
	for _, l := range lines[:len(lines)-1] {
		if strings.HasPrefix(l, "DLQ SEQ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 7 {
			t.Fatalf("list row %q has %d fields, want at least 7", l, len(f))
		}
		rows = append(rows, f[2]+"/"+f[3]+"/"+f[4])
	}
	slices.Sort(rows)
	return rows, countLine
}

var replayRowRE = regexp.MustCompile(`(?m)^(\d+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)\s+(\d+)\s+(true|false)`)

// replayRows parses `dlq replay` output: per event id, the new stream
// sequence and whether JetStream called it a duplicate.
func replayRows(t *testing.T, out string) map[string]struct {
	seq uint64
	dup bool
} {
	t.Helper()
	rows := map[string]struct {
		seq uint64
		dup bool
	}{}
	for _, m := range replayRowRE.FindAllStringSubmatch(out, -1) {
		seq, _ := strconv.ParseUint(m[4], 10, 64)
		rows[m[2]] = struct {
			seq uint64
			dup bool
		}{seq, m[5] == "true"}
	}
	return rows
}

// TestDLQListAndShowFilters dead-letters bad input of several kinds and
// checks what list and show select with each filter.
func TestDLQListAndShowFilters(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")

	out, errOut, code := dlqCmd("list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "is empty") {
		t.Fatalf("list of an empty stream: got code %d, stdout %q, stderr %q; want 0 and \"is empty\"", code, out, errOut)
	}

	h.publish(`{"specversion":"1.0","id":`, "")
	h.publish("\x00\xffbinary", "")
	h.publish(event("bad-lead", "leads_update", "u1", "A", "not-an-email"), "")
	h.publish(event("bad-user", "users_skip", "u2", "B", "also-not-an-email"), "")
	h.publish(event("good", "leads_update", "u3", "C", "c@example.com"), "")
	h.settled(5)
	if n := len(h.deadLetters()); n != 4 {
		t.Fatalf("dead letters: got %d, want 4", n)
	}

	const (
		malformed = "malformed/-/-"
		badLead   = "invalid_email/bad-lead/leads_update"
		badUser   = "invalid_email/bad-user/users_skip"
	)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	cases := []struct {
		name      string
		args      []string
		wantRows  []string // nil: any rows, as long as there are wantN
		wantN     int
		wantCount string
	}{
		{"no filter", nil, []string{badLead, badUser, malformed, malformed}, 4, "4 dead letters (of 4 in REFERRALS_DLQ)"},
		{"campaign", []string{"--campaign", "users_skip"}, []string{badUser}, 1, "1 dead letter"},
		{"reason invalid_email", []string{"--reason", "invalid_email"}, []string{badLead, badUser}, 2, "2 dead letters"},
		{"reason malformed", []string{"--reason", "malformed"}, []string{malformed, malformed}, 2, "2 dead letters"},
		{"id", []string{"--id", "bad-lead"}, []string{badLead}, 1, "1 dead letter"},
		{"filters combine with and", []string{"--campaign", "leads_update", "--reason", "malformed"}, nil, 0, "0 dead letters"},
		{"since a duration ago", []string{"--since", "1h"}, []string{badLead, badUser, malformed, malformed}, 4, "4 dead letters"},
		{"since in the future", []string{"--since", future}, nil, 0, "0 dead letters"},
		{"limit", []string{"--reason", "invalid_email", "--limit", "1"}, nil, 1, "1 dead letter (of 4 in REFERRALS_DLQ, stopped at --limit 1)"},
	}
	for _, c := range cases {
		t.Run("list "+c.name, func(t *testing.T) {
			out, errOut, code := dlqCmd(append([]string{"list", "--config", cfg}, c.args...)...)
			if code != 0 {
				t.Fatalf("got exit code %d (stderr %q), want 0", code, errOut)
			}
			rows, count := listRows(t, out)
			if len(rows) != c.wantN || (c.wantRows != nil && !slices.Equal(rows, c.wantRows)) {
				t.Errorf("got rows %v, want %d rows %v\n%s", rows, c.wantN, c.wantRows, out)
			}
			if !strings.HasPrefix(count, c.wantCount) {
				t.Errorf("got count line %q, want it to start with %q", count, c.wantCount)
			}
		})
	}

	t.Run("list --json", func(t *testing.T) {
		out, errOut, code := dlqCmd("list", "--config", cfg, "--json", "--campaign", "users_skip")
		if code != 0 {
			t.Fatalf("got exit code %d (stderr %q), want 0", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 {
			t.Fatalf("got %d lines, want 1: %q", len(lines), out)
		}
		var got dlqEntry
		if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
			t.Fatalf("decode %q: %v", lines[0], err)
		}
		if got.EventID != "bad-user" || got.Reason != domain.ReasonInvalidEmail || got.Campaign != "users_skip" ||
			got.Attempts != 1 || got.OriginalSubject != "referrer.joined" || got.OriginalSequence == 0 || got.Sequence == 0 || got.FailedAt.IsZero() {
			t.Errorf("got %+v, want bad-user's dead letter in full", got)
		}
	})

	showCases := []struct {
		name     string
		args     []string
		want     []string
		dontWant []string
	}{
		{
			name: "json body pretty-printed with every header",
			args: []string{"--id", "bad-lead"},
			want: []string{
				"event bad-lead", "campaign leads_update", "reason invalid_email",
				"Referrer-Sync-Reason: invalid_email", "Referrer-Sync-Event-Id: ",
				"Referrer-Sync-Attempts: 1", "Referrer-Sync-Original-Subject: referrer.joined", "Referrer-Sync-Failed-At: ",
				"body (", "JSON):", "\n        \"email\": \"not-an-email\",\n", "1 dead letter",
			},
			dontWant: []string{"bad-user"},
		},
		{
			name:     "binary body escaped",
			args:     []string{"--reason", "malformed"},
			want:     []string{`\x00\xffbinary`, "not JSON, escaped", `{"specversion":"1.0","id":`, "2 dead letters"},
			dontWant: []string{"\x00", "bad-lead"},
		},
	}
	for _, c := range showCases {
		t.Run("show "+c.name, func(t *testing.T) {
			out, errOut, code := dlqCmd(append([]string{"show", "--config", cfg}, c.args...)...)
			if code != 0 {
				t.Fatalf("got exit code %d (stderr %q), want 0", code, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range c.dontWant {
				if strings.Contains(out, w) {
					t.Errorf("output contains %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestDLQReplayOfFixedEvent makes events fail to the dead-letter stream,
// fixes the cause, and replays each: it is processed and the contact
// exists.
func TestDLQReplayOfFixedEvent(t *testing.T) {
	h := newHarness(t, emulator.Config{}, `
  tiered:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {value: "gold", to: custom_attributes.tier}
`)
	cfg := h.dlqConfig(t, "")
	createTier := func(t *testing.T) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, h.in.file.Connections["main"].BaseURL+"/data_attributes",
			strings.NewReader(`{"name":"tier","model":"contact","data_type":"string"}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Intercom-Version", "2.16")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // only the status matters
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("create attribute: got status %d, want 200", resp.StatusCode)
		}
	}
	setFaults := func(f emulator.Faults) func(t *testing.T) {
		return func(t *testing.T) {
			if err := h.emu.SetFaults(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name, id, campaign, email string
		breakIt, fix              func(t *testing.T)
		wantReason                string
		wantAttrs                 map[string]any
	}{
		{
			name: "custom attribute missing, then created", id: "fix-attr", campaign: "tiered", email: "ada@example.com",
			breakIt: func(*testing.T) {}, fix: createTier, wantReason: "crm_rejected",
			wantAttrs: map[string]any{"tier": "gold"},
		},
		{
			name: "attempts exhausted, then the CRM heals", id: "fix-5xx", campaign: "leads_update", email: "grace@example.com",
			breakIt:    setFaults(emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpSearchContacts}}),
			fix:        setFaults(emulator.Faults{}),
			wantReason: "attempts_exhausted",
			wantAttrs:  map[string]any{"lead_source": "Referral Factory"},
		},
	}
	settled := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.breakIt(t)
			msg := nats.NewMsg(h.in.consCfg.Subject)
			msg.Data = []byte(event(c.id, c.campaign, "usr_"+c.id, "Ada", c.email))
			msg.Header.Set("Content-Type", "application/cloudevents+json")
			msg.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
			settled++
			first := h.settled(settled)[settled-1]
			if first.Outcome != domain.OutcomeDeadLettered || first.Reason != c.wantReason {
				t.Fatalf("before the fix: got %s (%s: %v), want dead_lettered (%s)", first.Outcome, first.Reason, first.Err, c.wantReason)
			}
			dlSeq := h.dlqSeqs()[c.id]
			if len(dlSeq) != 1 {
				t.Fatalf("dead letters of %s: got %v, want one", c.id, dlSeq)
			}
			c.fix(t)

			out, errOut, code := dlqCmd("replay", "--config", cfg, "--id", c.id)
			if code != 0 {
				t.Fatalf("replay: got exit code %d (stderr %q), want 0", code, errOut)
			}
			if !strings.Contains(out, "replayed 1 of 1 dead letter to referrer.joined (1 stored, 0 already stored") {
				t.Errorf("replay output:\n%s\nwant it to report one replayed, stored message", out)
			}
			settled++
			second := h.settled(settled)[settled-1]
			if second.Outcome != domain.OutcomeCreated || second.EventID != c.id {
				t.Fatalf("after the replay: got %s for %q (%s: %v), want created for %s", second.Outcome, second.EventID, second.Reason, second.Err, c.id)
			}
			ct := only(t, h.emu.Contacts(testToken), c.email)
			if ct.ID != second.ContactID {
				t.Errorf("got contact %s, want %s", ct.ID, second.ContactID)
			}
			for k, v := range c.wantAttrs {
				if ct.CustomAttributes[k] != v {
					t.Errorf("custom attribute %s: got %v, want %v", k, ct.CustomAttributes[k], v)
				}
			}
			rec, _, err := h.in.ledger.Event(context.Background(), "main", c.id)
			if err != nil || rec.Outcome != domain.OutcomeCreated {
				t.Errorf("ledger: got %+v err=%v, want created", rec, err)
			}

			row, ok := replayRows(t, out)[c.id]
			if !ok {
				t.Fatalf("no replay row for %s in:\n%s", c.id, out)
			}
			s, err := h.js.Stream(context.Background(), h.in.consCfg.Stream)
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.GetMsg(context.Background(), row.seq)
			if err != nil {
				t.Fatalf("replayed message %d: %v", row.seq, err)
			}
			wantHeaders := map[string]string{
				"Content-Type":                "application/cloudevents+json",
				"Traceparent":                 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				replayedFromHeader:            strconv.FormatUint(dlSeq[0], 10),
				nats.MsgIdHdr:                 fmt.Sprintf("replay-REFERRALS_DLQ-%d", dlSeq[0]),
				consumer.HeaderReason:         "",
				consumer.HeaderEventID:        "",
				consumer.HeaderStreamSequence: "",
			}
			for k, v := range wantHeaders {
				if got := headerValue(m.Header, k); got != v {
					t.Errorf("replayed message header %s: got %q, want %q", k, got, v)
				}
			}
			if string(m.Data) != string(msg.Data) {
				t.Errorf("replayed body: got %q, want the original", m.Data)
			}
			if got := h.dlqSeqs()[c.id]; !slices.Equal(got, dlSeq) {
				t.Errorf("dead letters of %s after a replay without --purge: got %v, want %v", c.id, got, dlSeq)
			}
		})
	}
}

// TestDLQReplayAfterExhaustedAttemptsIsRetried replays an event that was
// dead-lettered after retry.max_attempts transient failures while the CRM
// is still failing: the replay starts afresh, so its failure is retried
// (and succeeds once the CRM heals) instead of being dead-lettered again
// at once on the ledger's old failure count.
func TestDLQReplayAfterExhaustedAttemptsIsRetried(t *testing.T) {
	h := newHarness(t, emulator.Config{Faults: emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpSearchContacts}}}, "")
	cfg := h.dlqConfig(t, "")
	h.publish(event("tired-1", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
	if v := h.settled(1)[0]; v.Outcome != domain.OutcomeDeadLettered || v.Reason != "attempts_exhausted" {
		t.Fatalf("before the replay: got %s (%s), want dead_lettered (attempts_exhausted)", v.Outcome, v.Reason)
	}
	retries := func() float64 {
		return h.counter("referrer_sync_retries_total", map[string]string{"campaign": "leads_update"})
	}
	before := retries()
	if _, errOut, code := dlqCmd("replay", "--config", cfg, "--id", "tired-1"); code != 0 {
		t.Fatalf("replay: got exit code %d (stderr %q), want 0", code, errOut)
	}
	deadline := time.Now().Add(20 * time.Second)
	for retries() == before {
		if vs := h.settled(1); len(vs) > 1 {
			t.Fatalf("the replayed event settled as %s (%v) without a retry; want it retried with fresh attempts", vs[1].Outcome, vs[1].Err)
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a retry of the replayed event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := h.emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	if v := h.settled(2)[1]; v.Outcome != domain.OutcomeCreated || v.EventID != "tired-1" {
		t.Errorf("after the CRM healed: got %s for %q (%v), want created for tired-1", v.Outcome, v.EventID, v.Err)
	}
	if n := count(h.emu.Contacts(testToken), "ada@example.com"); n != 1 {
		t.Errorf("got %d contacts for ada, want 1", n)
	}
}

// TestDLQReplayOfAppliedEventChangesNothing replays an event that was
// already applied: the service settles it as a duplicate without any CRM
// call, and a second replay is dropped by JetStream.
func TestDLQReplayOfAppliedEventChangesNothing(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")
	body := event("applied-1", "leads_update", "usr_1", "Ada", "ada@example.com")
	h.publish(body, "applied-1")
	first := h.settled(1)[0]
	if first.Outcome != domain.OutcomeCreated {
		t.Fatalf("first delivery: got %s (%v), want created", first.Outcome, first.Err)
	}
	contactsBefore := h.emu.Contacts(testToken)
	requestsBefore := h.emu.Requests()
	h.putDeadLetter(body, "applied-1", "leads_update", "attempts_exhausted")

	out, errOut, code := dlqCmd("replay", "--config", cfg, "--id", "applied-1")
	if code != 0 {
		t.Fatalf("replay: got exit code %d (stderr %q), want 0", code, errOut)
	}
	if row := replayRows(t, out)["applied-1"]; row.seq == 0 || row.dup {
		t.Errorf("replay row: got %+v, want a new stored message\n%s", row, out)
	}
	second := h.settled(2)[1]
	if second.Outcome != domain.OutcomeDuplicate || second.ContactID != first.ContactID {
		t.Errorf("replayed delivery: got %s %s, want duplicate %s", second.Outcome, second.ContactID, first.ContactID)
	}
	if got := h.emu.Contacts(testToken); !reflect.DeepEqual(got, contactsBefore) {
		t.Errorf("contacts changed by the replay:\ngot  %+v\nwant %+v", got, contactsBefore)
	}
	if got := h.emu.Requests(); len(got) != len(requestsBefore) {
		t.Errorf("CRM requests: got %d, want %d (no CRM call for a replay of an applied event): %+v", len(got), len(requestsBefore), got[len(requestsBefore):])
	}
	rec, _, err := h.in.ledger.Event(context.Background(), "main", "applied-1")
	if err != nil || rec.Outcome != domain.OutcomeCreated || rec.ContactID != first.ContactID {
		t.Errorf("ledger: got %+v err=%v, want created %s", rec, err, first.ContactID)
	}

	t.Run("a second replay is stored once", func(t *testing.T) {
		before := h.streamState(h.in.consCfg.Stream).LastSeq
		out, errOut, code := dlqCmd("replay", "--config", cfg, "--id", "applied-1")
		if code != 0 {
			t.Fatalf("second replay: got exit code %d (stderr %q), want 0", code, errOut)
		}
		if row := replayRows(t, out)["applied-1"]; !row.dup {
			t.Errorf("second replay row: got %+v, want duplicate=true\n%s", row, out)
		}
		if got := h.streamState(h.in.consCfg.Stream).LastSeq; got != before {
			t.Errorf("stream last sequence: got %d, want %d", got, before)
		}
		time.Sleep(200 * time.Millisecond)
		if got := len(h.settled(2)); got != 2 {
			t.Errorf("deliveries: got %d, want 2", got)
		}
	})
}

// TestDLQReplayGuards checks what replay refuses, what --dry-run and a
// failed republish leave alone, and that --purge deletes only what was
// republished.
func TestDLQReplayGuards(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")
	// An unrouted subject: no stream acknowledges a replay to it.
	unrouted := h.dlqConfig(t, "  subject: unrouted.joined\n  dead_letter_stream: REFERRALS_DLQ")
	seqKeep1 := h.putDeadLetter(event("g-keep1", "leads_update", "u1", "A", "a@example.com"), "g-keep1", "leads_update", "crm_rejected")
	seqOK := h.putDeadLetter(event("g-ok", "quiet", "u2", "B", "b@example.com"), "g-ok", "quiet", "crm_rejected")
	seqKeep2 := h.putDeadLetter(event("g-keep2", "users_skip", "u3", "C", "c@example.com"), "g-keep2", "users_skip", "crm_rejected")
	allDLQ := []uint64{seqKeep1, seqOK, seqKeep2}

	dlq := func() []uint64 {
		var out []uint64
		for _, m := range h.dlqMessages() {
			out = append(out, m.Sequence)
		}
		return out
	}
	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string // in stdout, or in stderr when the code is not 0
		wantDLQ    []uint64
		wantNewMsg uint64 // messages added to the main stream
	}{
		{"no filter and no --all is refused", []string{"replay", "--config", cfg}, 2, "--all", allDLQ, 0},
		{"--all with a filter is refused", []string{"replay", "--config", cfg, "--all", "--campaign", "quiet"}, 2, "cannot be combined", allDLQ, 0},
		{"--dry-run publishes and deletes nothing", []string{"replay", "--config", cfg, "--all", "--dry-run", "--purge"}, 0, "dry run: 3 dead letters would be replayed", allDLQ, 0},
		{"a republish nobody acknowledges deletes nothing", []string{"replay", "--config", unrouted, "--all", "--purge"}, 1, "it stays on REFERRALS_DLQ", allDLQ, 0},
		{"--purge deletes what was republished", []string{"replay", "--config", cfg, "--campaign", "quiet", "--purge"}, 0, "deleted 1 from REFERRALS_DLQ", []uint64{seqKeep1, seqKeep2}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.streamState(h.in.consCfg.Stream).Msgs
			out, errOut, code := dlqCmd(c.args...)
			if code != c.wantCode {
				t.Fatalf("got exit code %d (stdout %q, stderr %q), want %d", code, out, errOut, c.wantCode)
			}
			where := out
			if code != 0 {
				where = errOut
			}
			if !strings.Contains(where, c.wantOut) {
				t.Errorf("got stdout %q stderr %q, want %q", out, errOut, c.wantOut)
			}
			if got := dlq(); !slices.Equal(got, c.wantDLQ) {
				t.Errorf("dead-letter sequences: got %v, want %v", got, c.wantDLQ)
			}
			if got := h.streamState(h.in.consCfg.Stream).Msgs - before; got != c.wantNewMsg {
				t.Errorf("messages added to %s: got %d, want %d", h.in.consCfg.Stream, got, c.wantNewMsg)
			}
		})
	}
	t.Run("the purged event was processed", func(t *testing.T) {
		v := h.settled(1)[0]
		if v.EventID != "g-ok" || v.Outcome != domain.OutcomeNothing {
			t.Errorf("got %s for %q, want nothing for g-ok", v.Outcome, v.EventID)
		}
	})
	t.Run("list skips the deleted dead letter", func(t *testing.T) {
		out, errOut, code := dlqCmd("list", "--config", cfg)
		if code != 0 {
			t.Fatalf("got exit code %d (stderr %q), want 0", code, errOut)
		}
		rows, count := listRows(t, out)
		want := []string{"crm_rejected/g-keep1/leads_update", "crm_rejected/g-keep2/users_skip"}
		if !slices.Equal(rows, want) || !strings.HasPrefix(count, "2 dead letters (of 2 in REFERRALS_DLQ)") {
			t.Errorf("got rows %v and %q, want %v and 2 of 2", rows, count, want)
		}
	})
}

// TestDLQCommandErrors checks usage problems (exit 2) and stream problems.
func TestDLQCommandErrors(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")
	missing := h.dlqConfig(t, "  dead_letter_stream: NO_SUCH_DLQ")
	emptyURL := h.dlqConfig(t, "")
	cases := []struct {
		name     string
		natsURL  string // NATS_URL for the case; "-" keeps the harness URL
		args     []string
		wantCode int
		want     string
	}{
		{"no subcommand", "-", nil, 2, "needs a subcommand"},
		{"flags before the subcommand", "-", []string{"--config", cfg, "list"}, 2, "before its flags"},
		{"unknown subcommand", "-", []string{"purge", "--config", cfg}, 2, `unknown subcommand "purge"`},
		{"no config", "-", []string{"list"}, 2, "--config FILE is required"},
		{"bad --since", "-", []string{"list", "--config", cfg, "--since", "yesterday"}, 2, "neither an RFC 3339 time"},
		{"negative --since", "-", []string{"list", "--config", cfg, "--since", "-1h"}, 2, "must not be negative"},
		{"negative --limit", "-", []string{"list", "--config", cfg, "--limit", "-1"}, 2, "negative"},
		{"replay flag on list", "-", []string{"list", "--config", cfg, "--purge"}, 2, "flag provided but not defined"},
		{"stray argument", "-", []string{"show", "--config", cfg, "extra"}, 2, `unexpected argument "extra"`},
		{"empty nats url", "", []string{"list", "--config", emptyURL}, 2, "NATS_URL is set but empty"},
		{"missing dead-letter stream", "-", []string{"list", "--config", missing}, 1, "dead-letter stream NO_SUCH_DLQ does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.natsURL != "-" {
				t.Setenv("NATS_URL", c.natsURL)
			}
			out, errOut, code := dlqCmd(c.args...)
			if code != c.wantCode {
				t.Fatalf("got exit code %d (stdout %q, stderr %q), want %d", code, out, errOut, c.wantCode)
			}
			if !strings.Contains(errOut, c.want) {
				t.Errorf("got stderr %q, want it to contain %q", errOut, c.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		out, _, code := dlqCmd("-h")
		if code != 0 || !strings.Contains(out, "referrer-sync dlq list|show|replay") {
			t.Errorf("got code %d and %q, want 0 and the dlq usage", code, out)
		}
	})
}

// TestDLQTextIsSafeToPrint checks the escaping of what a dead letter
// carries into a terminal.
func TestDLQTextIsSafeToPrint(t *testing.T) {
	cases := []struct {
		name, in string
		mode     textMode
		want     string
	}{
		{"plain", "hello world", oneLine, "hello world"},
		{"control characters on one line", "a\tb\nc\x1b[31m", oneLine, `a\tb\nc\x1b[31m`},
		{"invalid utf-8", "\xff\xfeok", oneLine, `\xff\xfeok`},
		{"C1 control and bidi override", "a\u009bb\u202ec", oneLine, `a\u009bb\u202ec`},
		{"text keeps line feeds and escapes backslashes", "line 1\nC:\\x00", plainText, "line 1\nC:\\\\x00"},
		{"json keeps its escapes", "{\n  \"a\": \"b\\\"c\"\n}", jsonText, "{\n  \"a\": \"b\\\"c\"\n}"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := printable(c.in, c.mode); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
	t.Run("cells are cut and never empty", func(t *testing.T) {
		if got, want := cell("", 10), "-"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if got, want := cell("abcdefghijkl", 5), "abcd…"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}

// TestDLQSinceParsing checks the accepted --since forms.
func TestDLQSinceParsing(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
	}{
		{"24h", now.Add(-24 * time.Hour)},
		{"90m", now.Add(-90 * time.Minute)},
		{"2026-11-28T10:00:00Z", time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)},
		{"2026-11-28T11:00:00+01:00", time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)},
		{"2026-11-27", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := parseSince(c.in, now)
			if err != nil || !got.Equal(c.want) {
				t.Errorf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
}
