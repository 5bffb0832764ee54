package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

const (
	testToken    = "e2e-token"
	testTokenEnv = "REFERRER_SYNC_E2E_TOKEN"
)

// harness runs the real service path in-process: an embedded JetStream
// server (random port, temporary store), the Intercom emulator over HTTP on
// loopback, and the wiring that `referrer-sync run` uses.
type harness struct {
	t   *testing.T
	emu *emulator.Server
	in  *instance
	js  jetstream.JetStream

	mu       sync.Mutex
	verdicts []app.Verdict
	signal   chan struct{}
}

const e2eCampaigns = `
campaigns:
  leads_update:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.referral_link}
        - {value: "Referral Factory", to: custom_attributes.lead_source}
  users_skip:
    connection: main
    referrers:
      action: create_user
      on_duplicate: skip
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.id, to: external_id}
        - {from: referrer.first_name, to: name}
        - {from: referrer.signed_up_at, to: signed_up_at}
        - {from: referrer.url, to: custom_attributes.referral_link}
  users_update:
    connection: main
    referrers:
      action: create_user
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.first_name, to: name}
        - {from: referrer.meta.company, to: custom_attributes.company}
  quiet:
    connection: main
    referrers:
      action: nothing
`

func newHarness(t *testing.T, emuCfg emulator.Config, extraYAML string) *harness {
	t.Helper()
	if emuCfg.Tokens == nil {
		emuCfg.Tokens = map[string]emulator.Workspace{testToken: {ID: "e2e", Attributes: []string{"referral_link", "lead_source", "company"}}}
	}
	emuCfg.Seed = 7
	emu, err := emulator.New(emuCfg)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	hs := newTestServer(t, emu)
	t.Setenv(testTokenEnv, testToken)
	f := mustConfig(t, hs, extraYAML)
	h := &harness{t: t, emu: emu, signal: make(chan struct{}, 1)}
	log := discardLogger()
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := start(ctx, f, options{logger: log, observe: h.observe})
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	h.in = in
	done := make(chan error, 1)
	go func() { done <- in.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-in.consumer.Running():
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("consumer not running within 10s")
	}
	nc, err := nats.Connect(in.server.URL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	if h.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return h
}

func newTestServer(t *testing.T, emu *emulator.Server) *httptest.Server {
	t.Helper()
	hs := httptest.NewServer(emu)
	t.Cleanup(func() { hs.Close(); emu.Close() })
	return hs
}

// mustConfig is the tests' configuration: an embedded server with a
// temporary store, the emulator as the "main" connection, and fast retries.
func mustConfig(t *testing.T, hs *httptest.Server, extraYAML string) *config.File {
	t.Helper()
	t.Setenv("NATS_URL", "")
	doc := fmt.Sprintf(`
nats:
  url: ""
  store_dir: %q
  workers: 4
  ack_wait: 10s
http:
  listen: 127.0.0.1:0
retry:
  max_attempts: 3
  initial_delay: 100ms
  max_delay: 500ms
connections:
  main:
    type: intercom
    base_url: %q
    access_token_env: %s
    commit_grace: 1s
%s
%s`, t.TempDir(), hs.URL, testTokenEnv, e2eCampaigns, extraYAML)
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return f
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (h *harness) observe(_ app.Message, v app.Verdict) {
	h.mu.Lock()
	h.verdicts = append(h.verdicts, v)
	h.mu.Unlock()
	select {
	case h.signal <- struct{}{}:
	default:
	}
}

// publish puts a raw message on the subject. msgID, if set, is the
// JetStream message id (a new id re-delivers the same event).
func (h *harness) publish(body, msgID string) {
	h.t.Helper()
	msg := nats.NewMsg(h.in.consCfg.Subject)
	msg.Data = []byte(body)
	if msgID != "" {
		msg.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		h.t.Fatalf("publish: %v", err)
	}
}

// settled waits until n deliveries have a final outcome and returns them.
func (h *harness) settled(n int) []app.Verdict {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		var out []app.Verdict
		for _, v := range h.verdicts {
			if !v.Retry {
				out = append(out, v)
			}
		}
		h.mu.Unlock()
		if len(out) >= n {
			return out
		}
		select {
		case <-h.signal:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			h.t.Fatalf("got %d settled outcomes within 30s, want %d: %+v", len(out), n, out)
		}
	}
}

// deadLetters reads every message on the dead-letter stream.
func (h *harness) deadLetters() []jetstream.RawStreamMsg {
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
	var out []jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatalf("dlq message %d: %v", seq, err)
		}
		out = append(out, *m)
	}
	return out
}

// counter returns the value of a counter with exactly the given labels.
func (h *harness) counter(name string, labels map[string]string) float64 {
	h.t.Helper()
	mfs, err := h.in.metrics.Registry.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				sum += m.GetCounter().GetValue()
			}
		}
		return sum
	}
	return 0
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func event(id, campaign, refID, name, email string) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/campaigns/%s","type":"referrer.joined","time":"2026-11-28T10:00:00Z","datacontenttype":"application/json","data":{"campaign_id":%q,"campaign_name":"Spring launch","referrer":{"id":%q,"first_name":%q,"email":%q,"code":"C-%s","url":"https://refer.example.com/%s","source":"Widget","signed_up_at":"2026-11-28T09:59:58Z","meta":{"company":"Acme"}}}}`,
		id, campaign, campaign, refID, name, email, refID, refID)
}

func outcomes(vs []app.Verdict) []domain.Outcome {
	var out []domain.Outcome
	for _, v := range vs {
		out = append(out, v.Outcome)
	}
	return out
}
