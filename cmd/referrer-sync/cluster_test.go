package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
)

// clusterLedgerStream is the stream behind the ledger's default bucket.
const clusterLedgerStream = "KV_referrer_sync_ledger"

// clusterScale is the workload of TestExactlyOnceOnCluster: small enough
// for about a minute under -race, large enough that both node kills land
// while events are in flight.
var clusterScale = faultScale{replicas: 3, people: 150, minEvents: 260, dupRate: 0.2, invalidPerKind: 1, bursts: 4}

// clusterReplicaConfig is one replica's configuration on the cluster:
// stream, dead-letter stream and ledger at 3 replicas. Timing keeps the
// defaults except ack_wait (15s instead of 30s) and the longest retry delay
// (5s instead of 1m), so that a delivery whose acknowledgement died with a
// node, or that failed a few times while the ledger had no leader, comes
// back within the test's minute; the ledger's lease keeps its default,
// which fits that ack wait.
func clusterReplicaConfig(natsURLs, emulatorURL string, port int) string {
	return fmt.Sprintf(`
log: {level: info, format: json}
nats:
  url: %q
  replicas: 3
  workers: 4
  ack_wait: 15s
http:
  listen: 127.0.0.1:%d
retry: {max_delay: 5s}
ledger: {replicas: 3}
connections:
  main:
    type: intercom
    base_url: %q
    access_token_env: %s
    timeout: 2s
    search_lag: 3s
    marker_attribute: %s
%s`, natsURLs, port, emulatorURL, faultTokenEnv, faultMarker, faultCampaignsYAML)
}

// TestExactlyOnceOnCluster runs the real binary, three replicas started at
// the same moment, on a fresh embedded 3-node JetStream cluster with the
// event stream, the dead-letter stream and the ledger bucket at 3
// replicas. While events are published, the node leading the ledger
// bucket is killed and later restarted, then the node leading the event
// stream. Afterwards no event is lost, no person has two contacts, no
// valid event is dead-lettered, and no replica exited on its own, not even
// during start-up (concurrent provisioning on a fresh cluster).
func TestExactlyOnceOnCluster(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("REFERRER_SYNC_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REFERRER_SYNC_FAULT_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (REFERRER_SYNC_FAULT_SEED reproduces the workload, not the timing)", seed)
	rng := rand.New(rand.NewPCG(seed, 0xc1a57e2))

	dir, err := os.MkdirTemp("", "referrer-sync-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("run directory kept for inspection: %s (replica logs replica-N.log, configs, node stores)", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the run directory: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	c, nodes := newClusterRun(t, ctx, dir, clusterScale.replicas, emulator.Config{
		Tokens: map[string]emulator.Workspace{faultToken: {
			ID: faultWorkspace, RateLimit: 10000,
			Attributes: []string{"referral_link", "lead_source", "company"},
		}},
		SearchLag: 2 * time.Second,
		Latency:   5 * time.Millisecond,
		Seed:      int64(seed),
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("run directory: %s\n%s", dir, c.logTails(30))
		}
	})
	markerNote := c.checkMarker(ctx)
	for _, s := range []string{faultStream, faultDLQStream, clusterLedgerStream} {
		if r := clusterReplicas(ctx, c.js, s); r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", s, r)
		}
	}

	w := newFaultWorkload(rng, clusterScale)
	t.Logf("workload: %d people, %d valid events, %d duplicate publishes, %d invalid events, in %d bursts",
		len(w.people), w.valid(false), w.dups, len(w.invalid), len(w.bursts))

	// Node kills: the ledger's leader during burst 1, the event stream's
	// leader during burst 2 (looked up at that moment: the first kill may
	// have moved it). Each node stays down for a few seconds of traffic.
	type kill struct {
		what, stream string
		burst, node  int
		down         time.Duration
		err          error
	}
	kills := []*kill{
		{what: "ledger bucket leader", stream: clusterLedgerStream, burst: 1},
		{what: "event stream leader", stream: faultStream, burst: 2},
	}
	var bg sync.WaitGroup
	t.Cleanup(bg.Wait)
	for i, burst := range w.bursts {
		if i > 0 {
			faultSleep(ctx, time.Duration(1000+rng.IntN(1500))*time.Millisecond)
		}
		var done chan struct{}
		for _, k := range kills {
			if k.burst != i {
				continue
			}
			k.down = time.Duration(3000+rng.IntN(2000)) * time.Millisecond
			done = make(chan struct{})
			bg.Go(func() {
				defer close(done)
				faultSleep(ctx, 200*time.Millisecond)
				k.node = nodes.StreamLeader(k.stream)
				if k.node < 0 {
					k.err = fmt.Errorf("no leader for %s", k.stream)
					return
				}
				t.Logf("%s killing node n%d (%s, %s) for %s", c.since(), k.node, k.what, k.stream, k.down)
				nodes.Stop(k.node)
				faultSleep(ctx, k.down)
				k.err = nodes.Restart(k.node)
				t.Logf("%s node n%d restarted (err %v); %s leader now n%d", c.since(), k.node, k.err, k.stream, nodes.StreamLeader(k.stream))
			})
		}
		start := time.Now()
		c.publishAll(ctx, burst)
		t.Logf("%s published burst %d: %d messages in %s", c.since(), i, len(burst), time.Since(start).Round(time.Millisecond))
		if done != nil {
			<-done
		}
	}
	for _, k := range kills {
		if k.err != nil {
			t.Fatalf("killing the %s: %v", k.what, k.err)
		}
		c.nats.restarts++
	}

	led, err := ledger.New(ctx, c.js, ledger.Config{Replicas: 3})
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	st := c.awaitSettled(ctx, led, w, false, 60*time.Second)
	for _, r := range c.reps {
		if r.running() {
			c.scrapeBeforeStop(ctx, r)
		}
	}
	c.assert(w, st)
	afterReady, duringStart := c.unexpectedExits()
	for _, e := range append(duringStart, afterReady...) {
		t.Errorf("replica %d (start #%d) exited on its own at %s (was ready: %v): %v", e.replica, e.start, e.at.Sub(c.start).Round(time.Millisecond), e.wasReady, e.err)
	}
	for _, f := range c.scanLogs() {
		t.Errorf("replica log shows a crash or data race:\n%s", f)
	}
	c.report(w, st, faultFinal{}, markerNote, len(duringStart), st.elapsed)

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { _, _ = fmt.Fprintf(tw, "  %s\t%v\n", k, v) } // into a bytes.Buffer: cannot fail
	row("NATS nodes / stream, dead-letter stream, ledger replicas", "3 / 3, 3, 3")
	row("service replicas started together on the fresh cluster", len(c.reps))
	for _, k := range kills {
		row("killed and restarted: "+k.what, fmt.Sprintf("n%d, down %s, during burst %d", k.node, k.down.Round(100*time.Millisecond), k.burst))
	}
	retries := c.grepLogs([]string{`"msg":"start-up step failed; retrying"`}, 1000)
	provisioning := 0
	for _, l := range retries {
		if strings.Contains(l, `"step":"provision`) {
			provisioning++
		}
	}
	row("start-up attempts retried (all steps / provisioning)", fmt.Sprintf("%d / %d", len(retries), provisioning))
	row("replica exits on their own (start-up / after ready)", fmt.Sprintf("%d / %d", len(duringStart), len(afterReady)))
	if err := tw.Flush(); err != nil {
		t.Error(err)
	}
	t.Logf("3-node cluster run, %s:\n%s", c.since(), b.String())
	for _, l := range retries[:min(len(retries), 10)] {
		t.Logf("start-up retry: %s", l)
	}
	if testing.Verbose() {
		fmt.Println(b.String())
	}
}

// newClusterRun is newFaultCluster on an embedded 3-node cluster: it
// builds the binary, starts the cluster, the emulator and the replicas (all
// at once) and waits until every replica is ready.
func newClusterRun(t *testing.T, ctx context.Context, dir string, replicas int, emuCfg emulator.Config) (*faultCluster, *embedded.Cluster) {
	t.Helper()
	c := &faultCluster{t: t, dir: dir, start: time.Now(), nats: &faultNATS{}}
	bin := faultBuild(t, dir, faultRaceEnabled())

	nodes, err := embedded.StartCluster(embedded.ClusterConfig{StoreDir: filepath.Join(dir, "nodes"), SyncAlways: true})
	if err != nil {
		t.Fatalf("embedded cluster: %v", err)
	}
	t.Cleanup(nodes.Shutdown)

	emu, err := emulator.New(emuCfg)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	c.emu = emu
	c.rec = &faultRecorder{next: emu}
	c.hs = httptest.NewServer(c.rec)
	t.Cleanup(func() { emu.Close(); c.hs.Close() })

	c.nc, err = nats.Connect(nodes.URLs(), nats.Name("cluster-test"), nats.MaxReconnects(-1),
		nats.ReconnectWait(200*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		t.Fatal(err)
	}

	env := faultChildEnv()
	urls, emuURL := nodes.URLs(), c.hs.URL
	for i := range replicas {
		port := faultFreePort(t)
		doc := clusterReplicaConfig(urls, emuURL, port)
		f, err := config.Parse([]byte(doc))
		if err == nil {
			err = f.Validate()
		}
		if err != nil {
			t.Fatalf("replica %d configuration: %v\n%s", i, err, doc)
		}
		r := &faultReplica{
			idx: i, port: port, bin: bin, env: env, onExit: c.recordExit,
			config:  func(port int) string { return clusterReplicaConfig(urls, emuURL, port) },
			cfgPath: filepath.Join(dir, fmt.Sprintf("replica-%d.yaml", i)),
			logPath: filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)),
		}
		c.reps = append(c.reps, r)
	}
	t.Cleanup(func() {
		for _, r := range c.reps {
			r.kill()
		}
		faultHTTP.CloseIdleConnections()
	})
	c.startAll(ctx)
	return c, nodes
}

// clusterReplicas is a stream's replica count, or 0 when it cannot be read.
func clusterReplicas(ctx context.Context, js jetstream.JetStream, stream string) int {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(cctx, stream)
	if err != nil {
		return 0
	}
	return s.CachedInfo().Config.Replicas
}
