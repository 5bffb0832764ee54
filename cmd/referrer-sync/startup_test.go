package main

// Start-up under transient trouble: the real binary started before NATS
// is up, and the token check meeting 429s, 5xx and a refused token.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/ports"
)

// startupDoc is a configuration for the start-up tests.
func startupDoc(natsURL, emuURL, listen string) string {
	return fmt.Sprintf(`
log: {level: info, format: json}
nats:
  url: %q
  workers: 2
  ack_wait: 15s
  drain_timeout: 5s
http: {listen: %q}
retry: {max_attempts: 3, initial_delay: 100ms, max_delay: 500ms}
connections:
  main: {type: intercom, base_url: %q, access_token_env: %s, timeout: 2s}
%s`, natsURL, listen, emuURL, testTokenEnv, e2eCampaigns)
}

// startupGet is one GET; a refused connection is status 0.
func startupGet(url string) (int, string) {
	res, err := opsHTTP.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = res.Body.Close() }() // read to the end below
	var b bytes.Buffer
	_, _ = b.ReadFrom(res.Body)
	return res.StatusCode, b.String()
}

// startupProc is the binary running as a child process.
type startupProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done is closed
}

func startProc(t *testing.T, bin, config, logPath string) *startupProc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", config)
	cmd.Stdout, cmd.Stderr = f, f
	// NATS_URL, even empty, would override the file's nats.url.
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "NATS_URL" && k != testTokenEnv {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, testTokenEnv+"="+testToken)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &startupProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); _ = f.Close(); close(p.done) }() // the child wrote the log; our handle has nothing to flush
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *startupProc) logs() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (p *startupProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *startupProc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s of SIGTERM\n%s", p.logs())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// retryLines are the warn lines of failed start-up attempts of a step.
func retryLines(logs, step string) []logRecord {
	var out []logRecord
	for _, r := range logRecordsOf(logs) {
		if r.str("msg") == "start-up step failed; retrying" && strings.HasPrefix(r.str("step"), step) && r.str("level") == "WARN" {
			out = append(out, r)
		}
	}
	return out
}

// logRecordsOf parses JSON log lines, skipping anything else.
func logRecordsOf(s string) []logRecord {
	var out []logRecord
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r logRecord
		if json.Unmarshal([]byte(line), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// TestStartupWaitsForNATS starts the real binary while nothing listens on
// its NATS port: it stays up, answers /healthz, says on /readyz what it
// waits for, logs each failed attempt at warn with its number, becomes
// ready once a server starts on that port, and processes an event. A
// SIGTERM while it still waits ends it cleanly.
func TestStartupWaitsForNATS(t *testing.T) {
	bin := opsBuild(t, faultRaceEnabled())
	emu, err := emulator.New(emulator.Config{Tokens: map[string]emulator.Workspace{testToken: {ID: "startup", Attributes: []string{"referral_link", "lead_source", "company"}}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := newTestServer(t, emu)

	t.Run("becomes ready when NATS comes up", func(t *testing.T) {
		dir := t.TempDir()
		natsPort, addr := opsFreePort(t), fmt.Sprintf("127.0.0.1:%d", opsFreePort(t))
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg, []byte(startupDoc(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), hs.URL, addr)), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, bin, cfg, filepath.Join(dir, "run.log"))
		opsWait(t, 30*time.Second, "two failed connection attempts logged", func() bool {
			if p.exited() {
				t.Fatalf("exited while NATS was down: %v\n%s", p.err, p.logs())
			}
			return len(retryLines(p.logs(), "connect to nats")) >= 2
		})
		lines := retryLines(p.logs(), "connect to nats")
		for i, r := range lines[:2] {
			if got, ok := r["attempt"].(float64); !ok || int(got) != i+1 {
				t.Errorf("retry line %d: attempt %v, want %d", i, r["attempt"], i+1)
			}
			if !strings.Contains(r.str("error"), "no servers available") {
				t.Errorf("retry line %d: error %q, want the connection failure", i, r.str("error"))
			}
		}
		if code, body := startupGet("http://" + addr + "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz while waiting for NATS: %d %q, want 200", code, body)
		}
		code, body := startupGet("http://" + addr + "/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "connect to nats") {
			t.Errorf("/readyz while waiting for NATS: %d %q, want 503 naming the wait", code, body)
		}
		if code, body := startupGet("http://" + addr + "/metrics"); code != http.StatusOK || !strings.Contains(body, "referrer_sync_ready 0") {
			t.Errorf("/metrics while waiting for NATS: %d, want 200 with referrer_sync_ready 0", code)
		}

		srv, err := embedded.Start(embedded.Config{Port: natsPort, StoreDir: filepath.Join(dir, "js")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		opsWait(t, 30*time.Second, "ready after NATS came up", func() bool {
			if p.exited() {
				t.Fatalf("exited: %v\n%s", p.err, p.logs())
			}
			code, _ := startupGet("http://" + addr + "/readyz")
			return code == http.StatusOK
		})
		nc, err := nats.Connect(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(context.Background(), "referrer.joined", []byte(event("after-wait", "leads_update", "usr_1", "Ada", "ada@example.com"))); err != nil {
			t.Fatal(err)
		}
		opsWait(t, 20*time.Second, "the event applied", func() bool { return count(emu.Contacts(testToken), "ada@example.com") == 1 })
		if code := p.stop(t); code != 0 {
			t.Errorf("exit code after SIGTERM: %d, want 0\n%s", code, p.logs())
		}
	})

	t.Run("SIGTERM while waiting exits 0", func(t *testing.T) {
		dir := t.TempDir()
		addr := fmt.Sprintf("127.0.0.1:%d", opsFreePort(t))
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg, []byte(startupDoc(fmt.Sprintf("nats://127.0.0.1:%d", opsFreePort(t)), hs.URL, addr)), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, bin, cfg, filepath.Join(dir, "run.log"))
		opsWait(t, 30*time.Second, "a failed connection attempt logged", func() bool {
			if p.exited() {
				t.Fatalf("exited while NATS was down: %v\n%s", p.err, p.logs())
			}
			return len(retryLines(p.logs(), "connect to nats")) >= 1
		})
		if code := p.stop(t); code != 0 {
			t.Errorf("exit code after SIGTERM while waiting: %d, want 0\n%s", code, p.logs())
		}
		if !strings.Contains(p.logs(), "stopped during start-up") {
			t.Errorf("no log line saying start-up was stopped:\n%s", p.logs())
		}
	})
}

// meFaults answers the first n GET /me with status, then passes requests
// on to the emulator.
type meFaults struct {
	next   http.Handler
	status int
	n      int32
	seen   atomic.Int32
}

func (m *meFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/me" && m.seen.Add(1) <= m.n {
		w.Header().Set("Content-Type", "application/json")
		if m.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(m.status)
		_, _ = fmt.Fprintf(w, `{"type":"error.list","errors":[{"code":%q,"message":"injected by the test"}]}`, http.StatusText(m.status)) // the service under test reports a cut body
		return
	}
	m.next.ServeHTTP(w, r)
}

// TestStartupTokenCheck runs `referrer-sync run` in-process against a CRM
// whose token check fails: 429s and 5xx, more than the client's own
// retries absorb, are waited out and the service becomes ready; a refused
// token (401) ends start-up at once with exit code 1 and a clear message.
func TestStartupTokenCheck(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		failures int32 // GET /me answered with status before the emulator answers
		token    string
		wantCode int    // exit code; 0 = becomes ready, then stopped
		wantErr  string // in stderr, for a failed start
	}{
		// The client repeats a 429 up to 10 times and a 5xx up to 3 times
		// within one call, so these fail at least two whole checks.
		{name: "429 then 200", status: http.StatusTooManyRequests, failures: 25, token: testToken},
		{name: "503 then 200", status: http.StatusServiceUnavailable, failures: 9, token: testToken},
		{name: "401", token: "refused-token", wantCode: 1, wantErr: "connections.main: the CRM refused the access token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newOpsEnv(t, emulator.Config{})
			front := &meFaults{next: env.emu, status: tc.status, n: tc.failures}
			hs := httptest.NewServer(front)
			t.Cleanup(hs.Close)
			t.Setenv(testTokenEnv, tc.token)
			addr := fmt.Sprintf("127.0.0.1:%d", opsFreePort(t))
			cfg := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(cfg, []byte(startupDoc(env.srv.URL(), hs.URL, addr)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stderr := &syncBuffer{}
			exit := make(chan int, 1)
			go func() { exit <- run(ctx, []string{"run", "--config", cfg}, &bytes.Buffer{}, stderr) }()

			if tc.wantCode != 0 {
				select {
				case code := <-exit:
					if code != tc.wantCode {
						t.Errorf("exit code %d, want %d\n%s", code, tc.wantCode, stderr)
					}
				case <-time.After(60 * time.Second):
					t.Fatalf("still running after 60s; want exit %d\n%s", tc.wantCode, stderr)
				}
				if !strings.Contains(stderr.String(), tc.wantErr) {
					t.Errorf("stderr does not say %q:\n%s", tc.wantErr, stderr)
				}
				if strings.Contains(stderr.String(), tc.token) {
					t.Error("stderr shows the token")
				}
				if n := len(retryLines(stderr.String(), "verify")); n != 0 {
					t.Errorf("%d retries of a refused token, want none", n)
				}
				return
			}
			opsWait(t, 60*time.Second, "ready", func() bool {
				select {
				case code := <-exit:
					t.Fatalf("exited with %d before it was ready\n%s", code, stderr)
				default:
				}
				code, _ := startupGet("http://" + addr + "/readyz")
				return code == http.StatusOK
			})
			if got := front.seen.Load(); got <= tc.failures {
				t.Errorf("GET /me seen %d times, want more than the %d failures", got, tc.failures)
			}
			if n := len(retryLines(stderr.String(), "verify the access token of connections.main")); n < 1 {
				t.Errorf("no warn line for a retried token check\n%s", stderr)
			}
			cancel()
			select {
			case code := <-exit:
				if code != 0 {
					t.Errorf("exit code after stop: %d, want 0\n%s", code, stderr)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no exit within 30s of the stop")
			}
		})
	}
}

// TestStartupClassification pins which start-up failures are waited out.
func TestStartupClassification(t *testing.T) {
	nats5xx := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	noPeers := &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}
	notClustered := &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}
	badConfig := &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}
	natsCases := []struct {
		name string
		err  error
		want bool
	}{
		{"provisioning timed out", fmt.Errorf("ledger: provision bucket b: %w", context.DeadlineExceeded), true},
		{"request timed out", fmt.Errorf("consumer: %w", nats.ErrTimeout), true},
		{"no servers", fmt.Errorf("connect to nats: %w", nats.ErrNoServers), true},
		{"no responders", fmt.Errorf("consumer: look up stream S: %w", nats.ErrNoResponders), true},
		{"cluster unavailable", fmt.Errorf("consumer: create stream S: %w", nats5xx), true},
		{"no peers yet", fmt.Errorf("ledger: provision bucket b: %w", noPeers), true},
		{"JetStream not enabled yet", fmt.Errorf("x: %w", jetstream.ErrJetStreamNotEnabled), true},
		{"connection refused", fmt.Errorf("connect to nats: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{"authorization", fmt.Errorf("connect to nats: %w", nats.ErrAuthorization), false},
		{"replicas on a single server", fmt.Errorf("ledger: provision bucket b: %w", notClustered), false},
		{"refused configuration", fmt.Errorf("consumer: create stream S: %w", badConfig), false},
		{"stream misses the subject", errors.New("consumer: stream S exists but does not capture subject s"), false},
		{"dry run without a stream", fmt.Errorf("dry run: stream S does not exist: %w", jetstream.ErrStreamNotFound), false},
	}
	for _, tc := range natsCases {
		t.Run("nats/"+tc.name, func(t *testing.T) {
			if got, _ := natsTransient(tc.err); got != tc.want {
				t.Errorf("natsTransient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	crmCases := []struct {
		name      string
		err       error
		want      bool
		wantAfter time.Duration
	}{
		{"429", &ports.Error{Op: "me", Kind: ports.RateLimited, Status: 429, RetryAfter: 7 * time.Second}, true, 7 * time.Second},
		{"window spent, not sent", fmt.Errorf("wrapped: %w", &ports.Error{Op: "me", Kind: ports.RateLimited, RetryAfter: 3 * time.Second}), true, 3 * time.Second},
		{"5xx", &ports.Error{Op: "me", Kind: ports.Transient, Status: 503}, true, 0},
		{"timeout", fmt.Errorf("x: %w", context.DeadlineExceeded), true, 0},
		{"401", &ports.Error{Op: "me", Kind: ports.Unauthorized, Status: 401}, false, 0},
		{"403", &ports.Error{Op: "create_attribute", Kind: ports.Unauthorized, Status: 403}, false, 0},
		{"400", &ports.Error{Op: "create_attribute", Kind: ports.Permanent, Status: 400}, false, 0},
	}
	for _, tc := range crmCases {
		t.Run("crm/"+tc.name, func(t *testing.T) {
			got, after := crmTransient(tc.err)
			if got != tc.want || after != tc.wantAfter {
				t.Errorf("crmTransient(%v) = %v, %s, want %v, %s", tc.err, got, after, tc.want, tc.wantAfter)
			}
		})
	}
}

// TestStartupBackoff checks the waits between attempts: jittered within
// [d/2, d], doubling from the base, capped.
func TestStartupBackoff(t *testing.T) {
	for n := 1; n <= 40; n++ {
		ceiling := min(startBackoffBase<<min(n-1, 16), startBackoffCap)
		for range 50 {
			if d := backoffDelay(n); d < ceiling/2 || d > ceiling {
				t.Fatalf("backoffDelay(%d) = %s, want within [%s, %s]", n, d, ceiling/2, ceiling)
			}
		}
	}
	if got := min(startBackoffBase<<min(40-1, 16), startBackoffCap); got != startBackoffCap {
		t.Errorf("ceiling at attempt 40 = %s, want the cap %s", got, startBackoffCap)
	}
}
