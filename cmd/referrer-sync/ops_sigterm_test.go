package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
)

// opsBuild builds the service binary into the test's temporary directory,
// with -race when race is set.
func opsBuild(t *testing.T, race bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "referrer-sync")
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", bin, ".")
	cmd := exec.Command("go", args...) // the test runs in the package's directory
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// opsHTTP gives up quickly on a child that is not listening yet.
var opsHTTP = &http.Client{Timeout: 2 * time.Second}

func opsFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// opsChild is the service running as a child process.
type opsChild struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string // path of its stderr
	addr string
	done chan error
}

func startChild(t *testing.T, bin, config, addr, logPath string) *opsChild {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", config)
	cmd.Stderr, cmd.Stdout = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &opsChild{t: t, cmd: cmd, log: logPath, addr: addr, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait(); _ = logf.Close() }() // the child wrote the log; our handle has nothing to flush
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			if err := <-c.done; err != nil {
				t.Logf("child killed at clean-up: %v", err)
			}
		}
	})
	opsWait(t, 30*time.Second, "the child ready", func() bool {
		select {
		case err := <-c.done:
			c.done <- err
			t.Fatalf("child exited at start-up: %v\n%s", err, c.logs())
		default:
		}
		res, err := opsHTTP.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		_ = res.Body.Close() // only the status matters
		return res.StatusCode == 200
	})
	return c
}

func (c *opsChild) logs() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// terminate sends SIGTERM and waits for the exit: it returns the exit code
// and how long the process took to exit.
func (c *opsChild) terminate() (code int, took time.Duration) {
	c.t.Helper()
	began := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	select {
	case err := <-c.done:
		took = time.Since(began)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), took
		}
		if err != nil {
			c.t.Fatal(err)
		}
		return 0, took
	case <-time.After(60 * time.Second):
		c.t.Fatalf("no exit within 60s of SIGTERM\n%s", c.logs())
	}
	return -1, 0
}

// TestSIGTERMUnderLoad runs the real binary, sends SIGTERM while messages
// are in flight, restarts it, and shows that nothing is lost (every event
// applied, in the ledger and in the CRM) and nothing applied twice (one
// contact per person, one create per contact). It also reloads the second
// process's campaign settings with a real SIGHUP.
func TestSIGTERMUnderLoad(t *testing.T) {
	env := newOpsEnv(t, emulator.Config{Latency: 150 * time.Millisecond})
	// Built with the race detector when the test is: the consumer drains
	// its connection before closing the router, so watermill-nats's
	// close-versus-send at shutdown cannot happen (a race report exits 66).
	bin := opsBuild(t, faultRaceEnabled())
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", opsFreePort(t))
	doc := strings.Replace(env.doc(""), `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf("http: {listen: %q}", addr), 1)
	doc = signalOnly(strings.Replace(doc, "log: {level: debug}", "log: {level: info}", 1))
	// A short ack_wait: a message left unacknowledged comes back soon.
	doc = strings.Replace(doc, "ack_wait: 10s", "ack_wait: 3s", 1)
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	// The service's own topology, so the events wait in the stream.
	if err := consumer.Provision(context.Background(), env.js, consumer.Config{Workers: 4, AckWait: 3 * time.Second, MaxDeliver: 8}, nil); err != nil {
		t.Fatal(err)
	}
	// 30 people; the first 15 join a second time (an update).
	type evt struct{ id, email string }
	var events []evt
	for i := range 30 {
		email := fmt.Sprintf("p%02d@example.com", i)
		campaign := "leads_update"
		if i%2 == 1 {
			campaign = "users_update"
		}
		events = append(events, evt{fmt.Sprintf("t%02d-a", i), email})
		env.publish(event(fmt.Sprintf("t%02d-a", i), campaign, fmt.Sprintf("usr_%d", i), "P", email), "")
	}
	for i := range 15 {
		email := fmt.Sprintf("p%02d@example.com", i)
		events = append(events, evt{fmt.Sprintf("t%02d-b", i), email})
		env.publish(event(fmt.Sprintf("t%02d-b", i), "users_update", fmt.Sprintf("usr_%d", i), "P2", email), "")
	}

	first := startChild(t, bin, config, addr, filepath.Join(dir, "first.log"))
	var settledAtTerm, inFlightAtTerm float64
	opsWait(t, 30*time.Second, "load: 10 settled and work in flight", func() bool {
		mfs := opsScrape(t, addr)
		settledAtTerm, _ = metricValue(mfs, "referrer_sync_events_total", nil)
		inFlightAtTerm, _ = metricValue(mfs, "referrer_sync_in_flight_messages", nil)
		return settledAtTerm >= 10 && inFlightAtTerm >= 1
	})
	code, took := first.terminate()
	if code != 0 {
		t.Errorf("exit code after SIGTERM: got %d, want 0\n%s", code, first.logs())
	}
	recs := logRecords(t, first.logs())
	shutdown := withMsg(recs, "shutting down")
	drained := withMsg(recs, "drained")
	if len(shutdown) != 1 || len(drained) != 1 {
		t.Fatalf("got %d shutdown and %d drained lines, want 1 and 1\n%s", len(shutdown), len(drained), first.logs())
	}
	if n, _ := shutdown[0]["in_flight"].(float64); n < 1 {
		t.Errorf("in flight at SIGTERM: got %v, want at least 1 (the test must interrupt work)", shutdown[0]["in_flight"])
	}
	if w := withMsg(recs, "drain timeout"); len(w) != 0 {
		t.Errorf("drain timed out: %v", w)
	}
	settledByFirst := map[string]bool{}
	for _, r := range withMsg(recs, "event settled") {
		settledByFirst[r.str("event_id")] = true
	}
	settledFirst := len(settledByFirst)
	info := consumerInfo(t, env.js, "referrer-sync")
	drain, _ := drained[0]["took"].(float64)
	t.Logf("SIGTERM with %v in flight after %v settled: exit %d in %s (drain %s); first process settled %d of %d; after exit: %d ack pending, %d pending, %d redelivered, deliveries %d for %d stream messages",
		shutdown[0]["in_flight"], settledAtTerm, code, took.Round(time.Millisecond), time.Duration(drain).Round(time.Millisecond),
		settledFirst, len(events), info.NumAckPending, info.NumPending, info.NumRedelivered, info.Delivered.Consumer, info.Delivered.Stream)
	if settledFirst >= len(events) {
		t.Fatalf("the first process settled all %d events before SIGTERM; the test proves nothing", settledFirst)
	}

	second := startChild(t, bin, config, addr, filepath.Join(dir, "second.log"))
	led, err := ledger.New(context.Background(), env.js, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]domain.Outcome{}
	opsWait(t, 30*time.Second, "every event applied", func() bool {
		for _, e := range events {
			if _, ok := outcomes[e.id]; ok {
				continue
			}
			rec, ok, err := led.Event(context.Background(), "main", e.id)
			if err != nil {
				t.Fatal(err)
			}
			if ok && rec.Terminal() {
				outcomes[e.id] = rec.Outcome
			}
		}
		return len(outcomes) == len(events)
	})

	t.Run("finished work was acknowledged", func(t *testing.T) {
		// A message the first process settled and acknowledged is never
		// delivered again; a lost ack would show as a duplicate here.
		for _, r := range withMsg(logRecords(t, second.logs()), "event settled") {
			if id := r.str("event_id"); settledByFirst[id] {
				t.Errorf("%s: settled by the first process, delivered again to the second (%s)", id, r.str("outcome"))
			}
		}
	})

	t.Run("nothing lost, nothing twice", func(t *testing.T) {
		created := map[string]int{} // by email
		for _, e := range events {
			switch o := outcomes[e.id]; o {
			case domain.OutcomeCreated:
				created[e.email]++
			case domain.OutcomeUpdated:
			default:
				t.Errorf("%s: got %s, want created or updated", e.id, o)
			}
		}
		contacts := env.emu.Contacts(testToken)
		byEmail := map[string]int{}
		markers := map[string]bool{}
		for _, c := range contacts {
			byEmail[c.Email]++
			if m, _ := c.CustomAttributes["referrer_sync_event_id"].(string); m != "" {
				if markers[m] {
					t.Errorf("two contacts created by event %s", m)
				}
				markers[m] = true
			}
		}
		if len(contacts) != 30 {
			t.Errorf("contacts: got %d, want 30 (one per person)", len(contacts))
		}
		for i := range 30 {
			email := fmt.Sprintf("p%02d@example.com", i)
			if byEmail[email] != 1 || created[email] != 1 {
				t.Errorf("%s: got %d contacts and %d created outcomes, want 1 and 1", email, byEmail[email], created[email])
			}
		}
		creates := 0
		for _, r := range env.emu.Requests() {
			if r.Operation == emulator.OpCreateContact && r.Status == 200 {
				creates++
			}
		}
		if creates != 30 {
			t.Errorf("successful creates seen by the CRM: got %d, want 30", creates)
		}
	})

	t.Run("SIGHUP reloads the campaign settings", func(t *testing.T) {
		if err := os.WriteFile(config, []byte(doc+autumnCampaign), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := second.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		opsWait(t, 10*time.Second, "generation 2", func() bool {
			v, _ := metricValue(opsScrape(t, addr), "referrer_sync_config_generation", nil)
			return v == 2
		})
		env.publish(event("t-autumn", "autumn", "usr_a", "Au", "autumn@example.com"), "")
		opsWait(t, 10*time.Second, "the autumn event applied", func() bool {
			rec, ok, err := led.Event(context.Background(), "main", "t-autumn")
			return err == nil && ok && rec.Outcome == domain.OutcomeCreated
		})
	})

	if code, took := second.terminate(); code != 0 {
		t.Errorf("second process: exit %d after %s\n%s", code, took, second.logs())
	}
	if t.Failed() {
		t.Logf("first process:\n%s\nsecond process:\n%s", tail(first.logs(), 40), tail(second.logs(), 40))
	}
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
