package main

// The machinery of TestExactlyOnceUnderFaults: the real binary built once
// and run as supervised child processes, a restartable embedded JetStream
// server, the Intercom emulator behind a recording wrapper, a Prometheus
// text scraper, and the publisher.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

const (
	faultToken      = "fault-test-token"
	faultTokenEnv   = "REFERRER_SYNC_FAULT_TOKEN"
	faultWorkspace  = "fault"
	faultKeyHeader  = "Fault-Test-Key" // our own header: dead letters keep it (lower-cased)
	faultSubject    = "referrer.joined"
	faultStream     = "REFERRALS"
	faultDLQStream  = "REFERRALS_DLQ"
	faultConsumer   = "referrer-sync"
	faultConnection = "main"
	faultMarker     = "referrer_sync_event_id"
)

// faultCampaign is what the test knows of each configured campaign.
type faultCampaign struct {
	role   string // "lead", "user", or "" for action nothing
	update bool   // on_duplicate: update
	extID  bool   // maps referrer.id to external_id
}

var faultCampaigns = map[string]faultCampaign{
	"leads_update": {role: "lead", update: true},
	"leads_skip":   {role: "lead"},
	"users_skip":   {role: "user", extID: true},
	"users_update": {role: "user", update: true},
	"quiet":        {},
}

const faultCampaignsYAML = `
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
  leads_skip:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: skip
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.referral_link}
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

// faultReplicaConfig is one replica's whole input: only the listen port
// differs between replicas.
func faultReplicaConfig(natsURL, emulatorURL string, port int) string {
	return fmt.Sprintf(`
log: {level: info, format: json}
nats:
  url: %q
  workers: 4
  ack_wait: 5s
http:
  listen: 127.0.0.1:%d
retry: {max_attempts: 25, initial_delay: 200ms, max_delay: 2s}
ledger: {lease: 3s}
connections:
  main:
    type: intercom
    base_url: %q
    access_token_env: %s
    timeout: 1s
    search_lag: 3s
    marker_attribute: %s
%s`, natsURL, port, emulatorURL, faultTokenEnv, faultMarker, faultCampaignsYAML)
}

// faultModuleRoot is the directory of the module's go.mod.
func faultModuleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: got %q, want the module's go.mod", gomod)
	}
	return filepath.Dir(gomod)
}

// faultRaceEnabled reports whether this test binary was built with -race;
// the service binary is built the same way so CI's -race reaches it.
// REFERRER_SYNC_FAULT_RACE=0 or 1 overrides.
func faultRaceEnabled() bool {
	if v := os.Getenv("REFERRER_SYNC_FAULT_RACE"); v != "" {
		return v == "1" || v == "true"
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// faultBuild builds the service binary into dir.
func faultBuild(t *testing.T, dir string, race bool) string {
	t.Helper()
	bin := filepath.Join(dir, "referrer-sync")
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", bin, "./cmd/referrer-sync")
	cmd := exec.Command("go", args...)
	cmd.Dir = faultModuleRoot(t)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), cmd.Dir, err, out)
	}
	t.Logf("built %s (race=%v) in %s", bin, race, time.Since(start).Round(100*time.Millisecond))
	return bin
}

// faultFreePort returns a loopback port that was free a moment ago.
func faultFreePort(t *testing.T) int {
	t.Helper()
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return port
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// faultNATS is the embedded JetStream server, restartable on the same port
// and store.
type faultNATS struct {
	port     int
	dir      string
	mu       sync.Mutex
	srv      *embedded.Server
	restarts int
}

func (n *faultNATS) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *faultNATS) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var err error
	// The port was just released by the previous server; a short retry
	// covers a slow close.
	for range 20 {
		if n.srv, err = embedded.Start(embedded.Config{Port: n.port, StoreDir: n.dir}); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

func (n *faultNATS) shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

// restart stops the server, keeps it down for down, and starts it again on
// the same port and store.
func (n *faultNATS) restart(down time.Duration) error {
	n.shutdown()
	time.Sleep(down)
	if err := n.start(); err != nil {
		return err
	}
	n.mu.Lock()
	n.restarts++
	n.mu.Unlock()
	return nil
}

// faultRecorder sits in front of the emulator and keeps what its request
// log does not: whether an update tried to set a role, and whether creates
// carried the marker attribute. It passes the original ResponseWriter on,
// so the emulator can still hijack connections for lost responses.
type faultRecorder struct {
	next http.Handler

	mu            sync.Mutex
	roleUpdates   []string // "PUT /contacts/ID role=..."
	creates       int
	createsMarked int
}

func (r *faultRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	isUpdate := req.Method == http.MethodPut && strings.HasPrefix(req.URL.Path, "/contacts/")
	isCreate := req.Method == http.MethodPost && strings.TrimSuffix(req.URL.Path, "/") == "/contacts"
	if (isUpdate || isCreate) && req.Body != nil {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		_ = req.Body.Close() // read; the copy below replaces it
		req.Body = io.NopCloser(bytes.NewReader(body))
		var fields struct {
			Role   *string        `json:"role"`
			Custom map[string]any `json:"custom_attributes"`
		}
		if err == nil && json.Unmarshal(body, &fields) == nil {
			r.mu.Lock()
			if isUpdate && fields.Role != nil {
				r.roleUpdates = append(r.roleUpdates, fmt.Sprintf("%s %s role=%q", req.Method, req.URL.Path, *fields.Role))
			}
			if isCreate {
				r.creates++
				if _, ok := fields.Custom[faultMarker]; ok {
					r.createsMarked++
				}
			}
			r.mu.Unlock()
		}
	}
	r.next.ServeHTTP(w, req)
}

// faultExit is one end of a replica process.
type faultExit struct {
	replica, start int
	err            error
	expected       bool // we killed or stopped it
	wasReady       bool
	at             time.Time
}

// faultReplica supervises one replica slot: one process at a time, each
// start appended to the slot's log file.
type faultReplica struct {
	idx     int
	port    int // guarded by mu: each start listens on a fresh port
	config  func(port int) string
	bin     string
	cfgPath string
	logPath string
	env     []string
	onExit  func(faultExit)

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current process has exited
	starts   int
	expected bool
	ready    bool
	lastErr  error
}

func (r *faultReplica) currentPort() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.port
}

func (r *faultReplica) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (r *faultReplica) start() error {
	if r.running() {
		return fmt.Errorf("replica %d is already running", r.idx)
	}
	f, err := os.OpenFile(r.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A fresh port per start: the previous one may have been taken by
	// an outgoing connection since the last process died.
	if r.config != nil {
		port, perr := freeLoopbackPort()
		if perr != nil {
			_ = f.Close() // failing anyway; perr is the error to report
			return perr
		}
		if err := os.WriteFile(r.cfgPath, []byte(r.config(port)), 0o644); err != nil {
			_ = f.Close() // failing anyway; err is the error to report
			return err
		}
		r.port = port
	}
	r.starts++
	n := r.starts
	if _, err := fmt.Fprintf(f, "=== fault test: replica %d start #%d at %s\n", r.idx, n, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		_ = f.Close() // failing anyway
		return fmt.Errorf("replica %d log: %w", r.idx, err)
	}
	cmd := exec.Command(r.bin, "run", "--config", r.cfgPath)
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close() // failing anyway
		return fmt.Errorf("start replica %d: %w", r.idx, err)
	}
	done := make(chan struct{})
	r.cmd, r.done, r.expected, r.ready = cmd, done, false, false
	go func() {
		err := cmd.Wait()
		// The log is for a person reading a failed run; a lost line
		// changes no verdict, and the exit is recorded below either way.
		_, _ = fmt.Fprintf(f, "=== fault test: replica %d start #%d exited at %s: %v\n", r.idx, n, time.Now().UTC().Format(time.RFC3339Nano), err)
		_ = f.Close()
		r.mu.Lock()
		r.lastErr = err
		ex := faultExit{replica: r.idx, start: n, err: err, expected: r.expected, wasReady: r.ready, at: time.Now()}
		r.mu.Unlock()
		if r.onExit != nil {
			r.onExit(ex)
		}
		close(done)
	}()
	return nil
}

// waitReady polls /readyz until it answers 200, the process exits, or the
// deadline passes.
func (r *faultReplica) waitReady(ctx context.Context, within time.Duration) error {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done == nil {
		return fmt.Errorf("replica %d was never started", r.idx)
	}
	deadline := time.Now().Add(within)
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", r.currentPort())
	for {
		if code, _, err := faultGet(ctx, url); err == nil && code == http.StatusOK {
			r.mu.Lock()
			r.ready = true
			r.mu.Unlock()
			return nil
		}
		select {
		case <-done:
			r.mu.Lock()
			err := r.lastErr
			r.mu.Unlock()
			return fmt.Errorf("replica %d exited before it was ready: %w", r.idx, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %d not ready within %s", r.idx, within)
		}
	}
}

// startReady starts the replica and waits until it is ready, starting it
// again when it exits during start-up (as a supervisor would: it cannot
// connect while NATS is down).
func (r *faultReplica) startReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if err := r.start(); err != nil {
			return err
		}
		last = r.waitReady(ctx, time.Until(deadline))
		if last == nil || ctx.Err() != nil {
			return last
		}
		if r.running() { // not ready in time
			return last
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("replica %d: no ready start within %s: %w", r.idx, within, last)
}

// kill sends SIGKILL and waits for the process to be gone.
func (r *faultReplica) kill() {
	_ = r.stop(syscall.SIGKILL, 10*time.Second) // killed: its exit status says so and nothing more
}

// stop sends sig and waits up to within, then kills. It returns the exit
// error of the process (nil for a clean exit).
func (r *faultReplica) stop(sig syscall.Signal, within time.Duration) error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	if done == nil {
		r.mu.Unlock()
		return nil
	}
	select {
	case <-done:
		err := r.lastErr
		r.mu.Unlock()
		return err
	default:
	}
	r.expected = true
	r.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
		r.mu.Lock()
		defer r.mu.Unlock()
		return fmt.Errorf("did not exit within %s of %v (killed): %w", within, sig, r.lastErr)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

var faultHTTP = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func faultGet(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := faultHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// faultSample is one line of the Prometheus text format.
type faultSample struct {
	name   string
	labels map[string]string
	value  float64
}

// faultParseMetrics reads the text exposition format: enough of it for
// counters and gauges (no timestamps, no exemplars).
func faultParseMetrics(body []byte) ([]faultSample, error) {
	var out []faultSample
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := faultSample{labels: map[string]string{}}
		var rest string
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name = line[:i]
			j := i + 1
			for j < len(line) && line[j] != '}' {
				eq := strings.IndexByte(line[j:], '=')
				if eq < 0 || j+eq+1 >= len(line) || line[j+eq+1] != '"' {
					return nil, fmt.Errorf("bad labels in %q", line)
				}
				key := strings.TrimSpace(line[j : j+eq])
				k := j + eq + 2
				var val strings.Builder
				for k < len(line) && line[k] != '"' {
					if line[k] == '\\' && k+1 < len(line) {
						k++
						switch line[k] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(line[k])
						}
					} else {
						val.WriteByte(line[k])
					}
					k++
				}
				s.labels[key] = val.String()
				j = k + 1
				if j < len(line) && line[j] == ',' {
					j++
				}
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			f := strings.Fields(line)
			if len(f) < 2 {
				return nil, fmt.Errorf("bad sample %q", line)
			}
			s.name, rest = f[0], f[1]
		}
		if f := strings.Fields(rest); len(f) > 0 {
			rest = f[0]
		}
		v, err := strconv.ParseFloat(rest, 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in %q: %w", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// faultSum adds the samples of a metric whose labels include want.
func faultSum(samples []faultSample, name string, want map[string]string) float64 {
	var sum float64
	for _, s := range samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			sum += s.value
		}
	}
	return sum
}

// scrape reads a replica's /metrics.
func (r *faultReplica) scrape(ctx context.Context) ([]faultSample, error) {
	code, body, err := faultGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", r.currentPort()))
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", code)
	}
	return faultParseMetrics(body)
}

// faultCluster is everything the test runs: NATS, the emulator and the
// replicas, plus the test's own NATS client.
type faultCluster struct {
	t     *testing.T
	dir   string
	start time.Time
	nats  *faultNATS
	emu   *emulator.Server
	rec   *faultRecorder
	hs    *httptest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	reps  []*faultReplica

	mu      sync.Mutex
	exits   []faultExit
	kills   int
	scraped faultTotals // counters read from replicas just before they were killed or stopped
}

// faultTotals are counters summed over the scrapes of processes that are
// gone.
type faultTotals struct {
	duplicates, retries float64
	scrapes, missed     int
}

func (c *faultCluster) addScrape(s []faultSample) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scraped.scrapes++
	c.scraped.duplicates += faultSum(s, "referrer_sync_duplicates_absorbed_total", nil)
	c.scraped.retries += faultSum(s, "referrer_sync_retries_total", nil)
}

// scrapeBeforeStop records a replica's counters before it goes away; it
// is best effort (a kill loses what happened since).
func (c *faultCluster) scrapeBeforeStop(ctx context.Context, r *faultReplica) {
	s, err := r.scrape(ctx)
	if err != nil {
		c.mu.Lock()
		c.scraped.missed++
		c.mu.Unlock()
		return
	}
	c.addScrape(s)
}

func (c *faultCluster) recordExit(e faultExit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exits = append(c.exits, e)
}

// unexpectedExits are process ends the test did not cause, after the
// process had been ready (exits during start-up while NATS is down are a
// supervisor's business).
func (c *faultCluster) unexpectedExits() (afterReady, duringStart []faultExit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.exits {
		switch {
		case e.expected:
		case e.wasReady:
			afterReady = append(afterReady, e)
		default:
			duringStart = append(duringStart, e)
		}
	}
	return afterReady, duringStart
}

// publish stores one message on the stream, retrying (under the same
// Nats-Msg-Id, so JetStream drops a repeat) through a NATS restart.
func (c *faultCluster) publish(ctx context.Context, m faultMsg) (uint64, error) {
	msg := nats.NewMsg(faultSubject)
	msg.Data = m.body
	msg.Header.Set(nats.MsgIdHdr, m.msgID)
	msg.Header.Set(faultKeyHeader, m.key)
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := c.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		last = err
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second))
	}
	return 0, fmt.Errorf("publish %s: gave up: %w", m.msgID, last)
}

// consumerInfo returns the durable's state.
func (c *faultCluster) consumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cons, err := c.js.Consumer(cctx, faultStream, faultConsumer)
	if err != nil {
		return nil, err
	}
	return cons.Info(cctx)
}

// faultDeadLetter is one message on the dead-letter stream.
type faultDeadLetter struct {
	seq                 uint64
	key, reason, event  string
	attempts, message   string
	originalSeq, failed string
}

// deadLetters reads the dead-letter stream from after seq.
func (c *faultCluster) deadLetters(ctx context.Context, after uint64) ([]faultDeadLetter, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := c.js.Stream(cctx, faultDLQStream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(cctx)
	if err != nil {
		return nil, err
	}
	var out []faultDeadLetter
	if info.State.Msgs == 0 {
		return nil, nil
	}
	for seq := max(after+1, info.State.FirstSeq); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(cctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		h := func(name string) string {
			for k, v := range m.Header {
				if strings.EqualFold(k, name) && len(v) > 0 {
					return v[0]
				}
			}
			return ""
		}
		out = append(out, faultDeadLetter{
			seq: seq, key: h(faultKeyHeader), reason: h("Referrer-Sync-Reason"), event: h("Referrer-Sync-Event-Id"),
			attempts: h("Referrer-Sync-Attempts"), message: h("Referrer-Sync-Message"),
			originalSeq: h("Referrer-Sync-Stream-Sequence"), failed: h("Referrer-Sync-Failed-At"),
		})
	}
	return out, nil
}

// workspaceAttributes lists the workspace's contact data attributes
// through the API, as a client would.
func (c *faultCluster) workspaceAttributes(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.hs.URL+"/data_attributes?model=contact", nil)
	if err != nil {
		return nil, err
	}
	faultAPIHeaders(req)
	resp, err := faultHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // only the status and the JSON matter
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /data_attributes: HTTP %d", resp.StatusCode)
	}
	var list struct {
		Data []struct {
			Name string `json:"name"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	var names []string
	for _, d := range list.Data {
		names = append(names, d.Name)
	}
	return names, nil
}

// createAttribute creates a string contact attribute through the API.
func (c *faultCluster) createAttribute(ctx context.Context, name string) error {
	body := fmt.Sprintf(`{"name":%q,"model":"contact","data_type":"string"}`, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.hs.URL+"/data_attributes", strings.NewReader(body))
	if err != nil {
		return err
	}
	faultAPIHeaders(req)
	req.Header.Set("Content-Type", "application/json")
	resp, err := faultHTTP.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // only the status and the body matter
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST /data_attributes: HTTP %d: %s", resp.StatusCode, b)
	}
	return nil
}

func faultAPIHeaders(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+faultToken)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Intercom-Version", "2.16")
}

// faultChildEnv is the environment of a replica: ours, without anything
// that would override the configuration file, plus the token.
func faultChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "NATS_URL" || k == faultTokenEnv || k == "GORACE" {
			continue
		}
		env = append(env, kv)
	}
	// A race report must not stop the replica mid-run; it is found in the
	// log afterwards.
	return append(env, faultTokenEnv+"="+faultToken, "GORACE=halt_on_error=0")
}

// faultConfigFunc writes one replica's configuration file.
type faultConfigFunc func(natsURL, emulatorURL string, port int) string

// newFaultCluster builds the binary and starts NATS, the emulator (without
// faults) and the replicas, each configured by cfg, and waits until every
// replica is ready.
func newFaultCluster(t *testing.T, ctx context.Context, dir string, replicas int, emuCfg emulator.Config, cfg faultConfigFunc) *faultCluster {
	t.Helper()
	c := &faultCluster{t: t, dir: dir, start: time.Now()}
	bin := faultBuild(t, dir, faultRaceEnabled())

	c.nats = &faultNATS{port: faultFreePort(t), dir: filepath.Join(dir, "jetstream")}
	if err := c.nats.start(); err != nil {
		t.Fatalf("embedded NATS: %v", err)
	}
	t.Cleanup(c.nats.shutdown)

	emu, err := emulator.New(emuCfg)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	c.emu = emu
	c.rec = &faultRecorder{next: emu}
	c.hs = httptest.NewServer(c.rec)
	t.Cleanup(func() { emu.Close(); c.hs.Close() })

	c.nc, err = nats.Connect(c.nats.url(), nats.Name("fault-test"), nats.MaxReconnects(-1),
		nats.ReconnectWait(200*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		t.Fatal(err)
	}

	env := faultChildEnv()
	for i := range replicas {
		port := faultFreePort(t)
		doc := cfg(c.nats.url(), c.hs.URL, port)
		f, err := config.Parse([]byte(doc))
		if err == nil {
			err = f.Validate()
		}
		if err != nil {
			t.Fatalf("replica %d configuration: %v\n%s", i, err, doc)
		}
		natsURL, emuURL := c.nats.url(), c.hs.URL
		r := &faultReplica{
			idx: i, port: port, bin: bin, env: env, onExit: c.recordExit,
			config:  func(port int) string { return cfg(natsURL, emuURL, port) },
			cfgPath: filepath.Join(dir, fmt.Sprintf("replica-%d.yaml", i)),
			logPath: filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)),
		}
		if err := os.WriteFile(r.cfgPath, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		c.reps = append(c.reps, r)
	}
	// Registered after NATS and the emulator, so it runs before them.
	t.Cleanup(func() {
		for _, r := range c.reps {
			r.kill()
		}
		faultHTTP.CloseIdleConnections()
	})
	c.startAll(ctx)
	return c
}

// startAll starts every replica at once and waits until all are ready.
func (c *faultCluster) startAll(ctx context.Context) {
	c.t.Helper()
	errs := make([]error, len(c.reps))
	var wg sync.WaitGroup
	for i, r := range c.reps {
		wg.Go(func() { errs[i] = r.startReady(ctx, 90*time.Second) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatalf("starting replicas: %v\n%s", err, c.logTails(40))
	}
}

// stopAll sends SIGTERM to every replica and waits for a clean exit.
func (c *faultCluster) stopAll(ctx context.Context) []error {
	errs := make([]error, len(c.reps))
	var wg sync.WaitGroup
	for i, r := range c.reps {
		wg.Go(func() {
			c.scrapeBeforeStop(ctx, r)
			if err := r.stop(syscall.SIGTERM, 45*time.Second); err != nil {
				errs[i] = fmt.Errorf("replica %d: %w", r.idx, err)
			}
		})
	}
	wg.Wait()
	return slices.DeleteFunc(errs, func(e error) bool { return e == nil })
}

// logTails is the end of every replica's log.
func (c *faultCluster) logTails(lines int) string {
	var b strings.Builder
	for _, r := range c.reps {
		data, err := os.ReadFile(r.logPath)
		if err != nil {
			fmt.Fprintf(&b, "--- replica %d: %v\n", r.idx, err)
			continue
		}
		all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- replica %d (%s), last %d of %d lines:\n", r.idx, r.logPath, min(lines, len(all)), len(all))
		for _, l := range all[max(0, len(all)-lines):] {
			b.WriteString(faultTrim(l, 600))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// grepLogs returns the replicas' log lines that contain any of needles.
func (c *faultCluster) grepLogs(needles []string, limit int) []string {
	var out []string
	for _, r := range c.reps {
		f, err := os.Open(r.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			for _, n := range needles {
				if strings.Contains(line, n) {
					out = append(out, fmt.Sprintf("r%d: %s", r.idx, faultTrim(line, 500)))
					break
				}
			}
		}
		_ = f.Close() // read only
	}
	if len(out) > limit {
		out = append(out[:limit], fmt.Sprintf("... (%d more)", len(out)-limit))
	}
	return out
}

// scanLogs finds race reports and panics in the replicas' logs.
func (c *faultCluster) scanLogs() []string {
	var found []string
	for _, r := range c.reps {
		data, err := os.ReadFile(r.logPath)
		if err != nil {
			continue
		}
		lines := strings.Split(string(data), "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "WARNING: DATA RACE") || strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
				end := min(len(lines), i+30)
				found = append(found, fmt.Sprintf("replica %d (%s line %d):\n%s", r.idx, r.logPath, i+1, strings.Join(lines[i:end], "\n")))
			}
		}
	}
	return found
}

func faultTrim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// faultSleep waits d or until ctx is done; it paces the chaos, it never
// stands in for a condition.
func faultSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
