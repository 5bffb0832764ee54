package main

// Operations tests: readiness, logs and secrets, hot reload and the dry run,
// each on an in-process instance started exactly as `referrer-sync run`
// starts one (a configuration file, start, run), next to a JetStream server
// and the Intercom emulator that outlive it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers (loggers).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// opsEnv is the world an instance runs in: the emulator over HTTP and a
// JetStream server of its own, which can be stopped and started again.
type opsEnv struct {
	t      *testing.T
	emu    *emulator.Server
	emuURL string
	store  string
	srv    *embedded.Server
	port   int
	nc     *nats.Conn
	js     jetstream.JetStream
}

func newOpsEnv(t *testing.T, emuCfg emulator.Config) *opsEnv {
	t.Helper()
	// NATS_URL would override the file's nats.url; unset it for the test.
	t.Setenv("NATS_URL", "") // restores the variable after the test
	if err := os.Unsetenv("NATS_URL"); err != nil {
		t.Fatal(err)
	}
	t.Setenv(testTokenEnv, testToken)
	if emuCfg.Tokens == nil {
		emuCfg.Tokens = map[string]emulator.Workspace{testToken: {ID: "ops", Attributes: []string{"referral_link", "lead_source", "company"}}}
	}
	emuCfg.Seed = 11
	emu, err := emulator.New(emuCfg)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	e := &opsEnv{t: t, emu: emu, emuURL: newTestServer(t, emu).URL, store: t.TempDir()}
	e.startNATS()
	t.Cleanup(func() {
		e.nc.Close()
		if e.srv != nil {
			e.srv.Shutdown()
		}
	})
	return e
}

// startNATS starts the server, on the port it had before if any.
func (e *opsEnv) startNATS() {
	e.t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: e.store, Port: e.port})
	if err != nil {
		e.t.Fatalf("nats: %v", err)
	}
	e.srv = srv
	if e.port == 0 {
		u, err := url.Parse(srv.URL())
		if err != nil {
			e.t.Fatal(err)
		}
		e.port, _ = strconv.Atoi(u.Port())
		if e.nc, err = nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond)); err != nil {
			e.t.Fatal(err)
		}
		if e.js, err = jetstream.New(e.nc); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *opsEnv) stopNATS() {
	e.srv.Shutdown()
	e.srv = nil
}

// doc is a whole configuration file: the end-to-end campaigns plus extra
// campaigns (indented as entries of campaigns:), with short intervals.
func (e *opsEnv) doc(extraCampaigns string) string {
	return fmt.Sprintf(`
log: {level: debug}
nats:
  url: %q
  workers: 4
  ack_wait: 10s
  drain_timeout: 8s
http: {listen: "127.0.0.1:0"}
metrics: {consumer_poll_interval: 200ms}
reload: {poll_interval: 200ms}
retry: {max_attempts: 3, initial_delay: 100ms, max_delay: 500ms}
connections:
  main: {type: intercom, base_url: %q, access_token_env: %s, timeout: 5s, commit_grace: 1s}
%s%s`, e.srv.URL(), e.emuURL, testTokenEnv, e2eCampaigns, extraCampaigns)
}

func (e *opsEnv) publish(body, msgID string) {
	e.t.Helper()
	msg := nats.NewMsg("referrer.joined")
	msg.Data = []byte(body)
	if msgID != "" {
		msg.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		e.t.Fatalf("publish: %v", err)
	}
}

// opsInstance is one running instance, started from a file.
type opsInstance struct {
	t      *testing.T
	in     *instance
	path   string
	logs   *syncBuffer
	reload chan os.Signal
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error

	mu       sync.Mutex
	verdicts []app.Verdict
}

// startOps writes doc to a file and runs an instance from it, as cmdRun
// does, with every log line captured.
func (e *opsEnv) startOps(t *testing.T, doc string, dryRun bool) *opsInstance {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return e.startOpsAt(t, path, dryRun)
}

func (e *opsEnv) startOpsAt(t *testing.T, path string, dryRun bool) *opsInstance {
	t.Helper()
	f, sum, err := loadConfigHash(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	oi := &opsInstance{t: t, path: path, logs: &syncBuffer{}, reload: make(chan os.Signal, 1), done: make(chan error, 1)}
	var w io.Writer = oi.logs
	if testing.Verbose() {
		w = io.MultiWriter(oi.logs, testWriter{t})
	}
	ctx, cancel := context.WithCancel(context.Background())
	oi.cancel = cancel
	in, err := start(ctx, f, options{logger: newLogger(w, f.Log), observe: oi.observe,
		configPath: path, configHash: sum, reload: oi.reload, dryRun: dryRun})
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	oi.in = in
	go func() { oi.done <- in.run(ctx) }()
	t.Cleanup(func() {
		if err := oi.stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-in.consumer.Running():
	case err := <-oi.done:
		t.Fatalf("run ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("consumer not running within 10s")
	}
	return oi
}

// stop cancels the run (as SIGTERM does) and waits for it to return.
func (oi *opsInstance) stop() error {
	oi.once.Do(func() {
		oi.cancel()
		oi.err = <-oi.done
	})
	return oi.err
}

func (oi *opsInstance) observe(_ app.Message, v app.Verdict) {
	oi.mu.Lock()
	defer oi.mu.Unlock()
	oi.verdicts = append(oi.verdicts, v)
}

// settled waits for n settled verdicts and returns them in order.
func (oi *opsInstance) settled(n int) []app.Verdict {
	oi.t.Helper()
	var out []app.Verdict
	opsWait(oi.t, 30*time.Second, fmt.Sprintf("%d settled outcomes", n), func() bool {
		oi.mu.Lock()
		defer oi.mu.Unlock()
		out = out[:0]
		for _, v := range oi.verdicts {
			if !v.Retry {
				out = append(out, v)
			}
		}
		return len(out) >= n
	})
	return out
}

func (oi *opsInstance) allVerdicts() []app.Verdict {
	oi.mu.Lock()
	defer oi.mu.Unlock()
	return slices.Clone(oi.verdicts)
}

// sighup asks for a reload, as SIGHUP does.
func (oi *opsInstance) sighup() { oi.reload <- syscall.SIGHUP }

func (oi *opsInstance) rewrite(doc string) {
	oi.t.Helper()
	if err := os.WriteFile(oi.path, []byte(doc), 0o600); err != nil {
		oi.t.Fatal(err)
	}
}

// opsWait polls cond every 20 ms until it holds, failing after d.
func opsWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logRecord is one JSON log line.
type logRecord map[string]any

func (r logRecord) str(k string) string {
	v, _ := r[k].(string)
	return v
}

// logRecords parses every line; each must be JSON (the default format).
func logRecords(t *testing.T, s string) []logRecord {
	t.Helper()
	var out []logRecord
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var r logRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func withMsg(rs []logRecord, prefix string) []logRecord {
	var out []logRecord
	for _, r := range rs {
		if strings.HasPrefix(r.str("msg"), prefix) {
			out = append(out, r)
		}
	}
	return out
}

// httpGet returns a response's status and body.
func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer func() { _ = res.Body.Close() }() // read to the end below
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// opsScrape reads /metrics over HTTP, as Prometheus does.
func opsScrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := httpGet(t, "http://"+addr+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// metricValue sums the series of a family whose labels include want: the
// value of counters and gauges, the sample count of histograms. n is the
// number of series that matched.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, n int) {
	mf := mfs[name]
	if mf == nil {
		return 0, 0
	}
	for _, m := range mf.GetMetric() {
		if !labelsMatch(m, want) {
			continue
		}
		n++
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, n
}

// seriesOf renders a family's series as "label=value,… value", sorted,
// for comparing a whole family at once.
func seriesOf(mfs map[string]*dto.MetricFamily, name string) []string {
	var out []string
	for _, m := range mfs[name].GetMetric() {
		var ls []string
		for _, lp := range m.GetLabel() {
			ls = append(ls, lp.GetName()+"="+lp.GetValue())
		}
		v, _ := metricValue(map[string]*dto.MetricFamily{name: {Metric: []*dto.Metric{m}}}, name, nil)
		out = append(out, strings.Join(ls, ",")+" "+strconv.FormatFloat(v, 'g', -1, 64))
	}
	slices.Sort(out)
	return out
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		name, format string
		wantJSON     bool
	}{
		{"default is JSON", "", true},
		{"json", "json", true},
		{"text for a terminal", "text", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			newLogger(&b, config.Log{Level: "info", Format: tt.format}).Info("event settled", "event_id", "e1")
			got := json.Valid(bytes.TrimSpace(b.Bytes()))
			if got != tt.wantJSON {
				t.Errorf("got JSON=%v for %q, want %v", got, b.String(), tt.wantJSON)
			}
			if !strings.Contains(b.String(), "e1") {
				t.Errorf("got %q, want the attribute", b.String())
			}
		})
	}
}

// TestReadiness checks each condition /readyz reports: the consumer bound,
// the CRM tokens verified, NATS connected, and not draining.
func TestReadiness(t *testing.T) {
	t.Run("not bound before the consumer runs", func(t *testing.T) {
		env := newOpsEnv(t, emulator.Config{})
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(env.doc("")), 0o600); err != nil {
			t.Fatal(err)
		}
		f, _, err := loadConfigHash(path)
		if err != nil {
			t.Fatal(err)
		}
		in, err := start(context.Background(), f, options{logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(in.close)
		go func() { _ = in.httpSrv.Serve(in.httpLn) }()
		status, body := httpGet(t, "http://"+in.addr()+"/readyz")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "consumer not bound") {
			t.Errorf("/readyz: got %d %q, want 503 naming the consumer", status, body)
		}
		if status, _ := httpGet(t, "http://"+in.addr()+"/healthz"); status != http.StatusOK {
			t.Errorf("/healthz: got %d, want 200 (alive)", status)
		}
		if v, _ := metricValue(opsScrape(t, in.addr()), "referrer_sync_ready", nil); v != 0 {
			t.Errorf("referrer_sync_ready: got %v, want 0", v)
		}
	})

	t.Run("tokens verified at start-up", func(t *testing.T) {
		env := newOpsEnv(t, emulator.Config{})
		oi := env.startOps(t, env.doc(""), false)
		if status, body := httpGet(t, "http://"+oi.in.addr()+"/readyz"); status != http.StatusOK {
			t.Fatalf("/readyz: got %d %q, want 200", status, body)
		}
		oi.in.verified.Store(false)
		status, body := httpGet(t, "http://"+oi.in.addr()+"/readyz")
		oi.in.verified.Store(true)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "crm tokens not verified") {
			t.Errorf("/readyz unverified: got %d %q, want 503 naming the tokens", status, body)
		}
		// A token the CRM refuses stops start-up, so an instance with
		// unverified tokens never serves.
		t.Setenv(testTokenEnv, "not-the-token")
		f, _, err := loadConfigHash(oi.path)
		if err != nil {
			t.Fatal(err)
		}
		in, err := start(context.Background(), f, options{logger: discardLogger()})
		if err == nil {
			in.close()
			t.Fatal("start with a refused token: got nil error")
		}
		if !strings.Contains(err.Error(), "connections.main: the CRM refused the access token") {
			t.Errorf("got %v, want the connection and the refusal", err)
		}
	})

	t.Run("nats connected", func(t *testing.T) {
		env := newOpsEnv(t, emulator.Config{})
		oi := env.startOps(t, env.doc(""), false)
		readyz := "http://" + oi.in.addr() + "/readyz"
		env.stopNATS()
		opsWait(t, 10*time.Second, "503 while NATS is down", func() bool {
			status, body := httpGet(t, readyz)
			return status == http.StatusServiceUnavailable && strings.Contains(body, "nats not connected")
		})
		if v, _ := metricValue(opsScrape(t, oi.in.addr()), "referrer_sync_ready", nil); v != 0 {
			t.Errorf("referrer_sync_ready while NATS is down: got %v, want 0", v)
		}
		env.startNATS()
		opsWait(t, 15*time.Second, "200 after NATS is back", func() bool {
			status, _ := httpGet(t, readyz)
			return status == http.StatusOK
		})
		env.publish(event("after-restart", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
		if got := oi.settled(1)[0]; got.Outcome != domain.OutcomeCreated {
			t.Errorf("event after the NATS restart: got %s (%v), want created", got.Outcome, got.Err)
		}
	})

	t.Run("not ready while draining", func(t *testing.T) {
		env := newOpsEnv(t, emulator.Config{Latency: 700 * time.Millisecond})
		oi := env.startOps(t, env.doc(""), false)
		addr := oi.in.addr()
		env.publish(event("drain-1", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
		opsWait(t, 10*time.Second, "the event in flight", func() bool { return oi.in.consumer.Busy() == 1 })
		oi.cancel() // what SIGTERM does
		opsWait(t, 5*time.Second, "503 draining", func() bool {
			status, body := httpGet(t, "http://"+addr+"/readyz")
			return status == http.StatusServiceUnavailable && strings.Contains(body, "draining")
		})
		mfs := opsScrape(t, addr) // still served while draining
		if v, _ := metricValue(mfs, "referrer_sync_in_flight_messages", nil); v != 1 {
			t.Errorf("in flight while draining: got %v, want 1", v)
		}
		if err := oi.stop(); err != nil {
			t.Fatalf("run: %v", err)
		}
		if got := oi.settled(1)[0]; got.Outcome != domain.OutcomeCreated {
			t.Errorf("drained event: got %s (%v), want created", got.Outcome, got.Err)
		}
		cons, err := env.js.Consumer(context.Background(), "REFERRALS", "referrer-sync")
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 0 || info.NumPending != 0 {
			t.Errorf("after the drain: got %d ack pending, %d pending, want 0 and 0 (the finished message was acknowledged)", info.NumAckPending, info.NumPending)
		}
		if !strings.Contains(oi.logs.String(), `"msg":"drained"`) {
			t.Error("no \"drained\" log line")
		}
	})
}
