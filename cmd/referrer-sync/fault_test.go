package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// faultScale sizes one run.
type faultScale struct {
	replicas       int
	people         int
	minEvents      int
	dupRate        float64
	invalidPerKind int
	kills          int
	bursts         int
	finalPeople    int
	finalEvents    int
}

var (
	faultFull  = faultScale{replicas: 3, people: 1200, minEvents: 2000, dupRate: 0.2, invalidPerKind: 5, kills: 6, bursts: 4, finalPeople: 80, finalEvents: 100}
	faultShort = faultScale{replicas: 3, people: 200, minEvents: 300, dupRate: 0.2, invalidPerKind: 2, kills: 2, bursts: 3, finalPeople: 30, finalEvents: 40}
)

// faultFaults are the emulator's faults during the chaos phase; they apply
// to every operation. A 429 burst spends the rest of the workspace's
// current 10-second window, so a burst rate p caps throughput near
// 1/(10 s * p) requests per second whatever the limit: 0.005 would mean 20
// requests/s with the window spent most of the time, 0.001 means a burst
// every few windows that the service has to ride out.
var faultFaults = emulator.Faults{
	ServerErrorRate:    0.05,
	LostResponseRate:   0.03,
	TimeoutRate:        0.02,
	RateLimitBurstRate: 0.001,
}

// TestExactlyOnceUnderFaults is the proof of exactly-once: the real binary,
// several replicas on one durable consumer, a faulty Intercom (5xx, lost
// responses after commit, timeouts, 429 bursts, search lag), replicas
// killed with SIGKILL at random moments, the NATS server restarted, and
// duplicate publishes. Afterwards every person has exactly one contact,
// every event exactly one recorded outcome, every bad event one dead letter,
// and the service's metrics agree with what the CRM saw.
func TestExactlyOnceUnderFaults(t *testing.T) {
	sc := faultFull
	if testing.Short() {
		sc = faultShort
	}
	runFaults(t, sc, faultReplicaConfig)
}

// faultDefaultsScale is smaller in events than faultFull: with the default
// timing a SIGKILLed replica's messages come back only after ack_wait (30 s)
// and its people stay locked for the lease, so a run takes longer per event.
// Fewer people than events, about three events each, so that a killed
// replica's locks hold up other events of the same people.
var faultDefaultsScale = faultScale{replicas: 3, people: 80, minEvents: 260, dupRate: 0.2, invalidPerKind: 1, kills: 3, bursts: 3, finalPeople: 20, finalEvents: 25}

// faultDefaultsConfig is a replica's configuration with every timing
// setting a new user gets by default: ack wait, lease, attempts, retry
// delays, workers, drain and the CRM timeout. search_lag is the one
// exception: it describes the CRM (its search index lag, 2 s in the
// emulator), not the service's timing; the default (5 minutes, Intercom's
// "a few minutes") would only make the run wait.
func faultDefaultsConfig(natsURL, emulatorURL string, port int) string {
	return fmt.Sprintf(`
log: {level: info, format: json}
nats:
  url: %q
http:
  listen: 127.0.0.1:%d
connections:
  main:
    type: intercom
    base_url: %q
    access_token_env: %s
    search_lag: 3s
%s`, natsURL, port, emulatorURL, faultTokenEnv, faultCampaignsYAML)
}

// TestExactlyOnceUnderFaultsDefaultTiming is TestExactlyOnceUnderFaults
// with the default timing settings instead of shortened ones: the same
// faults, kills and NATS restart, on fewer events. Waiting for a killed
// replica's lock must not burn a valid event's deliveries into the dead
// letters, and no replica may exit on its own.
func TestExactlyOnceUnderFaultsDefaultTiming(t *testing.T) {
	runFaults(t, faultDefaultsScale, faultDefaultsConfig)
}

// runFaults is one run of the fault test at scale sc, the replicas
// configured by cfg.
func runFaults(t *testing.T, sc faultScale, cfg faultConfigFunc) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("REFERRER_SYNC_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REFERRER_SYNC_FAULT_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (REFERRER_SYNC_FAULT_SEED=%d reproduces the workload and fault draws, not the timing)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))

	dir, err := os.MkdirTemp("", "referrer-sync-fault-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("run directory kept for inspection: %s (replica logs replica-N.log, configs, JetStream store)", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the run directory: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	c := newFaultCluster(t, ctx, dir, sc.replicas, emulator.Config{
		Tokens: map[string]emulator.Workspace{faultToken: {
			ID: faultWorkspace, RateLimit: 2000,
			Attributes: []string{"referral_link", "lead_source", "company"},
		}},
		SearchLag: 2 * time.Second,
		Seed:      int64(seed),
	}, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("run directory: %s\n%s", dir, c.logTails(30))
		}
	})
	markerNote := c.checkMarker(ctx)
	if err := c.emu.SetFaults(faultFaults); err != nil {
		t.Fatal(err)
	}

	led, err := ledger.New(ctx, c.js, ledger.Config{})
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	w := newFaultWorkload(rng, sc)
	t.Logf("workload: %d people, %d valid events, %d duplicate publishes, %d invalid events, in %d bursts; then %d events for %d new people",
		len(w.people), w.valid(false), w.dups, len(w.invalid), len(w.bursts), w.valid(true), len(w.final))

	// Chaos: SIGKILL a random replica at random moments and restart it,
	// while the main goroutine publishes the bursts and restarts NATS once
	// in the middle of one.
	chaosCtx, stopChaos := context.WithCancel(ctx)
	chaosDone := make(chan error, 1)
	var chaosOnce sync.Once
	waitChaos := func() error {
		var err error
		chaosOnce.Do(func() { err = <-chaosDone })
		return err
	}
	t.Cleanup(func() { stopChaos(); _ = waitChaos() })
	crng := rand.New(rand.NewPCG(seed, 0xc4a05))
	go func() { chaosDone <- c.chaos(chaosCtx, crng, sc.kills) }()

	var bg sync.WaitGroup
	t.Cleanup(bg.Wait) // runs before the cluster's own clean-up
	natsBurst := len(w.bursts) / 2
	for i, burst := range w.bursts {
		if i > 0 {
			faultSleep(ctx, time.Duration(2000+rng.IntN(3000))*time.Millisecond)
		}
		var restarted chan error
		if i == natsBurst {
			restarted = make(chan error, 1)
			down := time.Duration(1000+rng.IntN(2000)) * time.Millisecond
			bg.Go(func() {
				faultSleep(ctx, 50*time.Millisecond)
				t.Logf("%s restarting NATS (down %s) during burst %d", c.since(), down, i)
				restarted <- c.nats.restart(down)
			})
		}
		start := time.Now()
		c.publishAll(ctx, burst)
		t.Logf("%s published burst %d: %d messages in %s", c.since(), i, len(burst), time.Since(start).Round(time.Millisecond))
		if restarted != nil {
			if err := <-restarted; err != nil {
				t.Fatalf("restarting NATS: %v", err)
			}
		}
	}
	if err := waitChaos(); err != nil {
		t.Errorf("chaos: %v", err)
	}
	t.Logf("%s chaos over: %d kills, %d NATS restarts", c.since(), c.kills, c.nats.restarts)

	// Completion of the chaos phase.
	chaosSt := c.awaitSettled(ctx, led, w, false, 3*time.Minute)

	// Metrics phase: fresh replicas, no faults, a final batch for new people.
	st, fin := chaosSt, faultFinal{}
	if chaosSt.ok {
		fin, st = c.finalPhase(ctx, led, w)
	} else {
		t.Errorf("skipping the metrics phase: the chaos phase did not settle")
	}

	if !fin.ran {
		w.final, w.finals = nil, nil // never published
		w.events = slices.DeleteFunc(w.events, func(e *faultEvent) bool { return e.person.final })
		for _, r := range c.reps {
			if r.running() {
				c.scrapeBeforeStop(ctx, r)
			}
		}
	}
	c.assert(w, st)
	afterReady, duringStart := c.unexpectedExits()
	for _, e := range afterReady {
		t.Errorf("replica %d (start #%d) exited on its own at %s after being ready: %v", e.replica, e.start, e.at.Sub(c.start).Round(time.Millisecond), e.err)
	}
	// Start-up waits out NATS restarts and CRM trouble, so an exit while
	// starting is a failure too.
	for _, e := range duringStart {
		t.Errorf("replica %d (start #%d) exited on its own at %s during start-up: %v", e.replica, e.start, e.at.Sub(c.start).Round(time.Millisecond), e.err)
	}
	for _, f := range c.scanLogs() {
		t.Errorf("replica log shows a crash or data race:\n%s", f)
	}
	c.report(w, st, fin, markerNote, len(duringStart), chaosSt.elapsed)
}

// faultPerson is one referrer, identified by email.
type faultPerson struct {
	email, refID, name string
	final              bool
	events             []*faultEvent
}

// faultEvent is one valid event.
type faultEvent struct {
	id, campaign string
	person       *faultPerson
	seq          uint64 // stream sequence of the first publish
}

// faultInvalid is one event that must be dead-lettered.
type faultInvalid struct {
	key, reason string
}

// faultMsg is one publish.
type faultMsg struct {
	msgID, key string
	body       []byte
	ev         *faultEvent
	dup        bool
}

type faultWorkload struct {
	people  []*faultPerson // chaos phase
	final   []*faultPerson // metrics phase, all new
	events  []*faultEvent
	invalid []*faultInvalid
	bursts  [][]faultMsg
	finals  []faultMsg
	dups    int
}

func (w *faultWorkload) valid(final bool) int {
	n := 0
	for _, e := range w.events {
		if e.person.final == final {
			n++
		}
	}
	return n
}

func newFaultWorkload(rng *rand.Rand, sc faultScale) *faultWorkload {
	w := &faultWorkload{}
	names := make([]string, 0, len(faultCampaigns))
	for n := range faultCampaigns {
		names = append(names, n)
	}
	sort.Strings(names)
	creates := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return faultCampaigns[n].role == "" })
	first := []string{"Ada", "Grace", "Linus", "Alan", "Edsger", "Barbara", "Ken", "Margaret"}
	newPerson := func(prefix string, n int, final bool) *faultPerson {
		return &faultPerson{
			email: fmt.Sprintf("%s%04d@referrers.example.com", prefix, n),
			refID: fmt.Sprintf("usr_%s%04d", prefix, n),
			name:  first[rng.IntN(len(first))],
			final: final,
		}
	}
	add := func(p *faultPerson, campaign string) *faultEvent {
		e := &faultEvent{id: fmt.Sprintf("evt-%05d", len(w.events)+1), campaign: campaign, person: p}
		p.events = append(p.events, e)
		w.events = append(w.events, e)
		return e
	}
	msgOf := func(e *faultEvent) faultMsg {
		return faultMsg{msgID: e.id, key: e.id, body: []byte(event(e.id, e.campaign, e.person.refID, e.person.name, e.person.email)), ev: e}
	}

	// Chaos-phase people: most in one campaign, some in two or three with
	// different actions and policies, a few only in quiet; some join a
	// campaign twice (two events).
	for i := range sc.people {
		p := newPerson("p", i, false)
		w.people = append(w.people, p)
		k := 1
		switch r := rng.Float64(); {
		case r < 0.05:
			k = 0 // quiet only
		case r > 0.87:
			k = 3
		case r > 0.55:
			k = 2
		}
		camps := []string{"quiet"}
		if k > 0 {
			camps = nil
			for _, j := range rng.Perm(len(names))[:k] {
				camps = append(camps, names[j])
			}
		}
		for _, cp := range camps {
			add(p, cp)
			if rng.Float64() < 0.12 {
				add(p, cp)
			}
		}
	}
	for len(w.events) < sc.minEvents {
		p := w.people[rng.IntN(len(w.people))]
		add(p, p.events[rng.IntN(len(p.events))].campaign)
	}

	// Publish order: originals shuffled; each duplicate publish (same body,
	// new Nats-Msg-Id) somewhere after its original; invalid events spread
	// among them.
	msgs := make([]faultMsg, 0, len(w.events)*2)
	for _, e := range w.events {
		msgs = append(msgs, msgOf(e))
	}
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	for i := 0; i < len(msgs); i++ {
		m := msgs[i]
		if m.dup || rng.Float64() >= sc.dupRate {
			continue
		}
		d := m
		d.msgID, d.key, d.dup = "dup-"+m.ev.id, "dup-"+m.ev.id, true
		at := i + 1 + rng.IntN(len(msgs)-i)
		msgs = slices.Insert(msgs, at, d)
		w.dups++
	}
	invMsgs, invalid := faultInvalidMsgs(sc.invalidPerKind)
	w.invalid = invalid
	for _, m := range invMsgs {
		msgs = slices.Insert(msgs, rng.IntN(len(msgs)+1), m)
	}

	// Bursts of unequal, random sizes.
	cuts := []int{0}
	for b := 1; b < sc.bursts; b++ {
		share := float64(b)/float64(sc.bursts) + (rng.Float64()-0.5)*0.15
		cuts = append(cuts, int(share*float64(len(msgs))))
	}
	cuts = append(cuts, len(msgs))
	for b := range sc.bursts {
		w.bursts = append(w.bursts, msgs[cuts[b]:cuts[b+1]])
	}

	// Final batch: new people, one event in a create campaign each, some a
	// second event in another campaign.
	for i := range sc.finalPeople {
		p := newPerson("f", i, true)
		w.final = append(w.final, p)
		w.finals = append(w.finals, msgOf(add(p, creates[rng.IntN(len(creates))])))
	}
	for i := 0; len(w.finals) < sc.finalEvents; i++ {
		p := w.final[i%len(w.final)]
		cp := names[rng.IntN(len(names))]
		if cp == p.events[0].campaign {
			continue
		}
		w.finals = append(w.finals, msgOf(add(p, cp)))
	}
	rng.Shuffle(len(w.finals), func(i, j int) { w.finals[i], w.finals[j] = w.finals[j], w.finals[i] })
	return w
}

// faultInvalidMsgs are bad events of several kinds, with the dead-letter
// reason each must get.
func faultInvalidMsgs(perKind int) ([]faultMsg, []*faultInvalid) {
	var out []faultMsg
	var invalid []*faultInvalid
	for i := range perKind {
		id := fmt.Sprintf("bad-%02d", i)
		good := func(suffix, email string) string {
			return event(id+suffix, "leads_update", "usr_bad", "Bad", email)
		}
		kinds := []struct{ reason, body string }{
			{domain.ReasonMalformed, fmt.Sprintf(`{"specversion":"1.0","id":"%s-m","type":"referrer.joined","data":{`, id)},
			{domain.ReasonWrongType, strings.Replace(good("-t", "bad@referrers.example.com"), `"referrer.joined"`, `"referrer.left"`, 1)},
			{domain.ReasonInvalidEmail, good("-e", fmt.Sprintf("not-an-email-%d", i))},
			{domain.ReasonMissingID, strings.Replace(good("-i", "bad@referrers.example.com"), `"id":"`+id+`-i"`, `"id":"  "`, 1)},
			{domain.ReasonMissingEmail, good("-n", "")},
			{domain.ReasonMissingCampaign, strings.Replace(good("-c", "bad@referrers.example.com"), `"campaign_id":"leads_update"`, `"campaign_id":""`, 1)},
		}
		for _, k := range kinds {
			key := fmt.Sprintf("inv-%s-%02d", k.reason, i)
			out = append(out, faultMsg{msgID: key, key: key, body: []byte(k.body)})
			invalid = append(invalid, &faultInvalid{key: key, reason: k.reason})
		}
	}
	return out, invalid
}

func (c *faultCluster) since() string {
	return "+" + time.Since(c.start).Round(100*time.Millisecond).String()
}

// checkMarker makes sure the marker attribute exists once the replicas are
// up. The service is supposed to create it at start-up; if it did not, the
// test creates it (so that a service that writes it can run) and says so.
func (c *faultCluster) checkMarker(ctx context.Context) string {
	c.t.Helper()
	attrs, err := c.workspaceAttributes(ctx)
	if err != nil {
		c.t.Fatalf("listing data attributes: %v", err)
	}
	if slices.Contains(attrs, faultMarker) {
		return "created by the service at start-up"
	}
	if err := c.createAttribute(ctx, faultMarker); err != nil {
		c.t.Fatalf("creating the marker attribute: %v", err)
	}
	c.t.Logf("NOTE: the service did not create the marker attribute %q at start-up; the test created it", faultMarker)
	return "NOT created by the service; created by the test"
}

// publishAll publishes messages in order, recording stream sequences.
func (c *faultCluster) publishAll(ctx context.Context, msgs []faultMsg) {
	c.t.Helper()
	for _, m := range msgs {
		seq, err := c.publish(ctx, m)
		if err != nil {
			c.t.Fatalf("%v", err)
		}
		if m.ev != nil && !m.dup {
			m.ev.seq = seq
		}
	}
}

// chaos kills random replicas at random moments and restarts them.
func (c *faultCluster) chaos(ctx context.Context, rng *rand.Rand, kills int) error {
	for k := range kills {
		if !faultSleep(ctx, time.Duration(2500+rng.IntN(5000))*time.Millisecond) {
			return ctx.Err()
		}
		r := c.reps[rng.IntN(len(c.reps))]
		c.scrapeBeforeStop(ctx, r)
		r.kill()
		c.mu.Lock()
		c.kills++
		c.mu.Unlock()
		c.t.Logf("%s kill %d: SIGKILL replica %d", c.since(), k+1, r.idx)
		if !faultSleep(ctx, time.Duration(200+rng.IntN(1500))*time.Millisecond) {
			return ctx.Err()
		}
		if err := r.startReady(ctx, 90*time.Second); err != nil {
			return fmt.Errorf("restarting replica %d after kill %d: %w", r.idx, k+1, err)
		}
		// Replicas that died on their own are brought back as a supervisor
		// would (and reported at the end).
		for _, o := range c.reps {
			if !o.running() {
				if err := o.startReady(ctx, 90*time.Second); err != nil {
					return fmt.Errorf("restarting replica %d: %w", o.idx, err)
				}
			}
		}
	}
	return nil
}

// faultState is what the ledger, the dead-letter stream and the consumer
// say after a phase.
type faultState struct {
	ok        bool
	records   map[string]ports.EventRecord
	dlq       []faultDeadLetter
	delivered uint64
	pending   uint64
	ackPend   int
	redeliv   int
	elapsed   time.Duration
}

// awaitSettled polls until every valid event of a create campaign (of the
// phase, or of both phases when final) has a ledger record, every invalid
// event is dead-lettered, and the durable has nothing pending or awaiting
// acknowledgement, twice in a row.
func (c *faultCluster) awaitSettled(ctx context.Context, led *ledger.Ledger, w *faultWorkload, final bool, within time.Duration) faultState {
	c.t.Helper()
	start := time.Now()
	st := faultState{records: map[string]ports.EventRecord{}}
	var want []*faultEvent
	for _, e := range w.events {
		if !e.person.final || final {
			want = append(want, e)
		}
	}
	needDLQ := map[string]bool{}
	for _, inv := range w.invalid {
		needDLQ[inv.key] = true
	}
	// A valid event on the dead-letter stream has settled too (wrongly:
	// assertion 4 reports it); waiting for its record would be in vain.
	dlqValid := map[string]bool{}
	var dlqSeq uint64
	stable, lastLog := 0, time.Now()
	deadline := time.Now().Add(within)
	for {
		missing := 0
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := led.Events(lctx)
		cancel()
		if err != nil {
			// Say why the ledger could not be read, and read it next time
			// through a fresh connection: the checker must not take its
			// own read failure for lost events.
			c.t.Logf("+%s reading the ledger failed: %v; reopening it", time.Since(start).Round(100*time.Millisecond), err)
			if fresh, ferr := c.freshLedger(ctx); ferr == nil {
				led = fresh
			} else {
				c.t.Logf("reopening the ledger: %v", ferr)
			}
		}
		for _, e := range want {
			if _, ok := st.records[e.id]; ok {
				continue
			}
			if rec, ok := snap[faultConnection+"/"+e.id]; err == nil && ok && rec.Terminal() {
				st.records[e.id] = rec
				continue
			}
			if faultCampaigns[e.campaign].role != "" && !dlqValid[e.id] {
				missing++
			}
		}
		if dls, err := c.deadLetters(ctx, dlqSeq); err == nil {
			for _, d := range dls {
				st.dlq = append(st.dlq, d)
				dlqSeq = d.seq
				delete(needDLQ, d.key)
				dlqValid[strings.TrimPrefix(d.key, "dup-")] = true
			}
		}
		idle := false
		if info, err := c.consumerInfo(ctx); err == nil {
			st.delivered, st.pending, st.ackPend, st.redeliv = info.Delivered.Consumer, info.NumPending, info.NumAckPending, info.NumRedelivered
			idle = info.NumPending == 0 && info.NumAckPending == 0
		}
		if missing == 0 && len(needDLQ) == 0 && idle {
			stable++
		} else {
			stable = 0
		}
		if stable >= 2 {
			st.ok = true
			st.elapsed = time.Since(start)
			c.t.Logf("%s settled=%v after %s: %d records, %d create-campaign events without a record, %d invalid events not dead-lettered, pending %d, ack pending %d",
				c.since(), st.ok, st.elapsed.Round(100*time.Millisecond), len(st.records), missing, len(needDLQ), st.pending, st.ackPend)
			return st
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			c.t.Logf("%s waiting: %d create-campaign events without a record, %d invalid not dead-lettered, pending %d, ack pending %d, delivered %d",
				c.since(), missing, len(needDLQ), st.pending, st.ackPend, st.delivered)
		}
		if time.Now().After(deadline) {
			st.elapsed = time.Since(start)
			c.t.Errorf("not settled within %s: %d create-campaign events without a ledger record, %d invalid events not dead-lettered, consumer pending %d, ack pending %d",
				within, missing, len(needDLQ), st.pending, st.ackPend)
			return st
		}
		if !faultSleep(ctx, time.Second) {
			return st
		}
	}
}

// faultFinal is the outcome of the metrics phase.
type faultFinal struct {
	ran             bool
	createdMetric   float64
	createdContacts int
	create200Metric float64
	create200Log    int
	outcomes        float64
	settled         bool
	stopErrs        []error
}

// finalPhase stops the replicas (SIGTERM), turns faults off, starts fresh
// replicas, publishes a batch for new people and compares the fresh
// replicas' metrics with the emulator's log.
func (c *faultCluster) finalPhase(ctx context.Context, led *ledger.Ledger, w *faultWorkload) (faultFinal, faultState) {
	c.t.Helper()
	fin := faultFinal{ran: true}
	fin.stopErrs = c.stopAll(ctx)
	for _, err := range fin.stopErrs {
		c.t.Errorf("SIGTERM: %v (want a clean exit)", err)
	}
	if err := c.emu.SetFaults(emulator.Faults{}); err != nil {
		c.t.Fatal(err)
	}
	var mark int64
	if reqs := c.emu.Requests(); len(reqs) > 0 {
		mark = reqs[len(reqs)-1].Seq
	}
	c.startAll(ctx)
	c.t.Logf("%s metrics phase: fresh replicas ready, faults off, publishing %d events", c.since(), len(w.finals))
	c.publishAll(ctx, w.finals)
	st := c.awaitSettled(ctx, led, w, true, 90*time.Second)
	fin.settled = st.ok

	finalEmails := map[string]bool{}
	for _, p := range w.final {
		finalEmails[p.email] = true
	}
	for _, ct := range c.emu.Contacts(faultToken) {
		if finalEmails[ct.Email] {
			fin.createdContacts++
		}
	}
	for _, r := range c.emu.Requests() {
		if r.Seq > mark && r.Operation == emulator.OpCreateContact && r.Status == 200 && r.Committed && r.Fault == emulator.FaultNone {
			fin.create200Log++
		}
	}
	for _, r := range c.reps {
		s, err := r.scrape(ctx)
		if err != nil {
			c.t.Errorf("scraping replica %d: %v", r.idx, err)
			continue
		}
		fin.createdMetric += faultSum(s, "referrer_sync_events_total", map[string]string{"outcome": "created"})
		fin.create200Metric += faultSum(s, "referrer_sync_crm_requests_total", map[string]string{"connection": faultConnection, "operation": "create", "status": "200"})
		fin.outcomes += faultSum(s, "referrer_sync_events_total", nil)
	}
	// Without faults every message of the batch is settled once, and each
	// settled message is counted in exactly one outcome.
	if got, want := fin.outcomes, float64(len(w.finals)); got != want {
		c.t.Errorf("metrics phase: sum of referrer_sync_events_total over replicas = %v, want %v (one outcome per message of the final batch)", got, want)
	}
	if got, want := fin.createdMetric, float64(fin.createdContacts); got != want {
		c.t.Errorf("metrics phase: sum of referrer_sync_events_total{outcome=\"created\"} over replicas = %v, want %v (contacts the emulator holds for the final batch's people)", got, want)
	}
	if got, want := fin.create200Metric, float64(fin.create200Log); got != want {
		c.t.Errorf("metrics phase: sum of referrer_sync_crm_requests_total{operation=\"create\",status=\"200\"} = %v, want %v (committed CreateContact 200s in the emulator's log since the fresh start)", got, want)
	}
	return fin, st
}

// assert checks the end state against the workload, from the emulator's
// own state and request log, the ledger and the dead-letter stream.
func (c *faultCluster) assert(w *faultWorkload, st faultState) {
	t := c.t
	t.Helper()
	contacts := c.emu.Contacts(faultToken)
	reqs := c.emu.Requests()
	byEmail := map[string][]emulator.Contact{}
	for _, ct := range contacts {
		byEmail[ct.Email] = append(byEmail[ct.Email], ct)
	}
	committedUpdates := map[string]int{}
	createdBy := map[string]emulator.Request{}
	for _, r := range reqs {
		switch {
		case r.Operation == emulator.OpUpdateContact && r.Committed:
			committedUpdates[r.ContactID]++
		case r.Operation == emulator.OpCreateContact && r.Committed:
			createdBy[r.ContactID] = r
		}
	}
	known := map[string]bool{}
	var offenders []*faultPerson
	offend := func(p *faultPerson) {
		if !slices.Contains(offenders, p) {
			offenders = append(offenders, p)
		}
	}
	people := append(slices.Clone(w.people), w.final...)
	for _, p := range people {
		known[p.email] = true
		cs := byEmail[p.email]
		roles := map[string]bool{}
		for _, e := range p.events {
			if r := faultCampaigns[e.campaign].role; r != "" {
				roles[r] = true
			}
		}
		// 1. One contact per person with a create campaign, none otherwise.
		want := 0
		if len(roles) > 0 {
			want = 1
		}
		if len(cs) != want {
			t.Errorf("assertion 1: %s has %d contacts, want %d", p.email, len(cs), want)
			offend(p)
		}
		for _, ct := range cs {
			if !roles[ct.Role] {
				t.Errorf("assertion 1: %s: contact %s has role %q, want one of %v", p.email, ct.ID, ct.Role, slices.Sorted(maps.Keys(roles)))
				offend(p)
			}
		}

		// 2. Exactly one created event; the others follow their policy.
		var created []*faultEvent
		for _, e := range p.events {
			fc := faultCampaigns[e.campaign]
			rec, ok := st.records[e.id]
			if fc.role == "" {
				if ok && rec.Outcome != domain.OutcomeNothing {
					t.Errorf("assertion 2: quiet event %s of %s recorded as %s, want nothing or no record", e.id, p.email, rec.Outcome)
					offend(p)
				}
				continue
			}
			if !ok {
				t.Errorf("assertion 2: event %s (%s, %s) has no ledger record: lost", e.id, e.campaign, p.email)
				offend(p)
				continue
			}
			if rec.Outcome == domain.OutcomeCreated {
				created = append(created, e)
				if len(cs) == 1 && cs[0].ID == rec.ContactID {
					if cs[0].Role != fc.role {
						t.Errorf("assertion 1: %s: contact %s created by %s (%s) has role %q, want %q", p.email, rec.ContactID, e.id, e.campaign, cs[0].Role, fc.role)
						offend(p)
					}
					if fc.extID && cs[0].ExternalID != p.refID {
						t.Errorf("assertion 1: %s: user %s created by %s (users_skip) has external_id %q, want %q", p.email, rec.ContactID, e.id, cs[0].ExternalID, p.refID)
						offend(p)
					}
				}
			} else {
				want := domain.OutcomeSkipped
				if fc.update {
					want = domain.OutcomeUpdated
				}
				if rec.Outcome != want {
					t.Errorf("assertion 2: event %s (%s) of %s recorded as %s, want %s", e.id, e.campaign, p.email, rec.Outcome, want)
					offend(p)
				}
			}
			if len(cs) == 1 && rec.ContactID != cs[0].ID {
				t.Errorf("assertion 2: event %s (%s) of %s recorded contact %q, want the person's contact %s", e.id, e.campaign, p.email, rec.ContactID, cs[0].ID)
				offend(p)
			}
		}
		if len(roles) > 0 && len(created) != 1 {
			ids := make([]string, 0, len(created))
			for _, e := range created {
				ids = append(ids, e.id+"("+e.campaign+")")
			}
			t.Errorf("assertion 2: %s has %d events with outcome created %v, want exactly 1", p.email, len(created), ids)
			offend(p)
		}

		// 3. Updated events each left a committed update on the contact.
		if len(cs) == 1 {
			updated := 0
			for _, e := range p.events {
				if rec, ok := st.records[e.id]; ok && rec.Outcome == domain.OutcomeUpdated {
					updated++
				}
			}
			if got := committedUpdates[cs[0].ID]; got < updated {
				t.Errorf("assertion 3: %s: contact %s has %d committed UpdateContact requests, want at least %d (events recorded as updated)", p.email, cs[0].ID, got, updated)
				offend(p)
			}
		}
	}
	for email, cs := range byEmail {
		if !known[email] {
			t.Errorf("assertion 1: %d contacts with email %q, which no event carried", len(cs), email)
		}
	}
	c.rec.mu.Lock()
	roleUpdates := slices.Clone(c.rec.roleUpdates)
	c.rec.mu.Unlock()
	if len(roleUpdates) > 0 {
		t.Errorf("assertion 3: %d UpdateContact requests tried to set a role, want none: %v", len(roleUpdates), roleUpdates[:min(len(roleUpdates), 10)])
	}

	// 4. Dead letters: every invalid event once, with its reason; no valid
	// event.
	dlByKey := map[string][]faultDeadLetter{}
	for _, d := range st.dlq {
		dlByKey[d.key] = append(dlByKey[d.key], d)
	}
	for _, inv := range w.invalid {
		ds := dlByKey[inv.key]
		if len(ds) != 1 {
			t.Errorf("assertion 4: invalid event %s has %d dead letters, want 1", inv.key, len(ds))
		}
		for _, d := range ds {
			if d.reason != inv.reason {
				t.Errorf("assertion 4: invalid event %s dead-lettered with reason %q, want %q", inv.key, d.reason, inv.reason)
			}
		}
	}
	byID := map[string]*faultEvent{}
	for _, e := range w.events {
		byID[e.id] = e
	}
	for _, d := range st.dlq {
		id := strings.TrimPrefix(d.key, "dup-")
		if e := byID[id]; e != nil {
			t.Errorf("assertion 4: valid event %s (%s, %s; published as %s) dead-lettered: reason %q after %s attempts: %s",
				e.id, e.campaign, e.person.email, d.key, d.reason, d.attempts, faultTrim(d.message, 300))
			offend(e.person)
		}
	}

	// Evidence for the first offenders.
	if len(offenders) > 0 {
		t.Log(c.diagnose(offenders, st, byEmail, createdBy))
		t.Errorf("%d people fail the checks; details of the first %d follow (replica logs in %s)", len(offenders), min(len(offenders), 8), c.dir)
		for _, p := range offenders[:min(len(offenders), 8)] {
			t.Log(c.describe(p, st, byEmail[p.email], reqs, createdBy))
		}
	}
}

// diagnose sorts the failing people by what the emulator's log and the
// replicas' logs say happened.
func (c *faultCluster) diagnose(people []*faultPerson, st faultState, byEmail map[string][]emulator.Contact, createdBy map[string]emulator.Request) string {
	settledBy := c.settledBy()
	var extra, extraUncertain, extraSame, extraCross, noCreated, noCreatedUncertain, other int
	pairs := map[string]int{}
	for _, p := range people {
		cs := byEmail[p.email]
		uncertain := false
		var roles []string // in creation order, with the fault of the creating request
		for _, ct := range cs {
			r := ct.Role
			if f := createdBy[ct.ID].Fault; f == emulator.FaultLost || f == emulator.FaultTimeout {
				uncertain = true
				r += "(" + string(f) + ")"
			}
			roles = append(roles, r)
		}
		created := 0
		reps := map[int]bool{}
		for _, e := range p.events {
			if rec, ok := st.records[e.id]; ok && rec.Outcome == domain.OutcomeCreated {
				created++
				for _, r := range settledBy[e.id+"/created"] {
					reps[r] = true
				}
			}
		}
		switch {
		case len(cs) > 1:
			extra++
			pairs[strings.Join(roles, "→")]++
			switch {
			case uncertain:
				extraUncertain++
			case len(reps) > 1:
				extraCross++
			default:
				extraSame++
			}
		case len(cs) == 1 && created == 0:
			noCreated++
			if uncertain {
				noCreatedUncertain++
			}
		default:
			other++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "diagnosis of %d failing people:\n", len(people))
	fmt.Fprintf(&b, "  %d with extra contacts (roles in creation order, fault of the creating request: %v):\n", extra, pairs)
	fmt.Fprintf(&b, "    %d where a create's response was lost or timed out (committed) and a later attempt created again\n", extraUncertain)
	fmt.Fprintf(&b, "    %d where every create was answered, created by one replica (search-lag miss inside one process)\n", extraSame)
	fmt.Fprintf(&b, "    %d where every create was answered, created by different replicas (no cross-replica person lock)\n", extraCross)
	fmt.Fprintf(&b, "  %d with one contact but no event recorded as created:\n", noCreated)
	fmt.Fprintf(&b, "    %d where the create's response was lost or timed out and a later attempt recorded skipped/updated\n", noCreatedUncertain)
	fmt.Fprintf(&b, "    %d where the create was answered (look for a failed ledger write of the creating event in the logs)\n", noCreated-noCreatedUncertain)
	fmt.Fprintf(&b, "  %d other\n", other)
	return b.String()
}

// settledBy maps "event id/outcome" to the replicas whose logs say they
// settled the event with that outcome.
func (c *faultCluster) settledBy() map[string][]int {
	out := map[string][]int{}
	for _, r := range c.reps {
		f, err := os.Open(r.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var l struct {
				Msg     string `json:"msg"`
				EventID string `json:"event_id"`
				Outcome string `json:"outcome"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != "event settled" {
				continue
			}
			out[l.EventID+"/"+l.Outcome] = append(out[l.EventID+"/"+l.Outcome], r.idx)
		}
		_ = f.Close() // read only
	}
	return out
}

// describe is the evidence for one person: events and their records,
// contacts, the CRM requests that touched them, and the replicas' log lines.
func (c *faultCluster) describe(p *faultPerson, st faultState, cs []emulator.Contact, reqs []emulator.Request, createdBy map[string]emulator.Request) string {
	var b strings.Builder
	rel := func(at time.Time) string { return "+" + at.Sub(c.start).Round(time.Millisecond).String() }
	fmt.Fprintf(&b, "=== %s (referrer %s)\n", p.email, p.refID)
	var ids []string
	for _, e := range p.events {
		rec, ok := st.records[e.id]
		out := "no record"
		if ok {
			out = fmt.Sprintf("%s contact=%s at %s", rec.Outcome, rec.ContactID, rel(rec.At))
		}
		fmt.Fprintf(&b, "  event %s %-12s stream seq %d: %s\n", e.id, e.campaign, e.seq, out)
		ids = append(ids, `"`+e.id+`"`)
	}
	touched := map[string]bool{}
	for _, ct := range cs {
		touched[ct.ID] = true
		by := createdBy[ct.ID]
		fmt.Fprintf(&b, "  contact %s role=%s external_id=%q created %s by request #%d (status %d, fault %s)\n",
			ct.ID, ct.Role, ct.ExternalID, rel(ct.CreatedAt), by.Seq, by.Status, by.Fault)
	}
	for _, r := range reqs {
		if touched[r.ContactID] {
			fmt.Fprintf(&b, "  crm #%d %s %s %s status=%d fault=%s committed=%v contact=%s\n",
				r.Seq, rel(r.Time), r.Operation, r.Path, r.Status, r.Fault, r.Committed, r.ContactID)
		}
	}
	for _, l := range c.grepLogs(ids, 25) {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// report prints the run's table.
func (c *faultCluster) report(w *faultWorkload, st faultState, fin faultFinal, markerNote string, startExits int, chaosSettle time.Duration) {
	t := c.t
	t.Helper()
	reqs := c.emu.Requests()
	faults := map[emulator.Fault]int{}
	var status429 int
	for _, r := range reqs {
		faults[r.Fault]++
		if r.Status == 429 {
			status429++
		}
	}
	contacts := c.emu.Contacts(faultToken)
	dlqIDs := map[string]bool{}
	for _, d := range st.dlq {
		dlqIDs[strings.TrimPrefix(d.key, "dup-")] = true
	}
	lost, lostDLQ, created, wantContacts := 0, 0, 0, 0
	duplicated := 0
	byEmail := map[string]int{}
	for _, ct := range contacts {
		byEmail[ct.Email]++
	}
	for _, p := range append(slices.Clone(w.people), w.final...) {
		hasCreate := false
		for _, e := range p.events {
			if faultCampaigns[e.campaign].role == "" {
				continue
			}
			hasCreate = true
			if _, ok := st.records[e.id]; !ok {
				lost++
				if dlqIDs[e.id] {
					lostDLQ++
				}
			}
		}
		if hasCreate {
			wantContacts++
		}
		if n := byEmail[p.email]; n > 1 {
			duplicated += n - 1
		}
	}
	created = len(contacts)
	validDLQ := 0
	for _, d := range st.dlq {
		if !strings.HasPrefix(d.key, "inv-") {
			validDLQ++
		}
	}
	if lost != 0 {
		t.Errorf("lost = %d, want 0 (valid events of create campaigns without a ledger record; %d of them dead-lettered)", lost, lostDLQ)
	}
	if duplicated != 0 {
		t.Errorf("duplicated = %d, want 0", duplicated)
	}
	c.rec.mu.Lock()
	creates, marked := c.rec.creates, c.rec.createsMarked
	c.rec.mu.Unlock()
	c.mu.Lock()
	tot := c.scraped
	kills := c.kills
	c.mu.Unlock()

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { _, _ = fmt.Fprintf(tw, "  %s\t%v\n", k, v) } // into a bytes.Buffer: cannot fail
	row("faults injected: 5xx", faults[emulator.FaultServerError])
	row("faults injected: lost responses (after commit)", faults[emulator.FaultLost])
	row("faults injected: timeouts (after commit)", faults[emulator.FaultTimeout])
	row("faults injected: 429 from bursts / all 429s", fmt.Sprintf("%d / %d", faults[emulator.FaultRateLimit], status429))
	row("CRM requests (emulator log)", len(reqs))
	row("replica kills (SIGKILL)", kills)
	row("NATS restarts", c.nats.restarts)
	row("replica exits during start-up (NATS down)", startExits)
	row("people / valid events (chaos + final)", fmt.Sprintf("%d / %d", len(w.people)+len(w.final), len(w.events)))
	row("duplicate publishes (new Nats-Msg-Id)", w.dups)
	row("invalid events published", len(w.invalid))
	row("deliveries (durable's delivered count)", st.delivered)
	row("redeliveries outstanding at end", st.redeliv)
	row("duplicates absorbed (metrics, best effort)", fmt.Sprintf(">= %.0f (%d scrapes, %d missed)", tot.duplicates, tot.scrapes, tot.missed))
	row("retries (metrics, best effort)", fmt.Sprintf(">= %.0f", tot.retries))
	row("contacts created / expected", fmt.Sprintf("%d / %d", created, wantContacts))
	row("creates carrying the marker attribute", fmt.Sprintf("%d of %d POST /contacts", marked, creates))
	row("marker attribute", markerNote)
	row("dead-lettered (invalid / valid)", fmt.Sprintf("%d / %d", len(st.dlq)-validDLQ, validDLQ))
	row("lost (valid events without a ledger record)", fmt.Sprintf("%d (of which dead-lettered: %d)", lost, lostDLQ))
	row("duplicated (extra contacts per person)", duplicated)
	if fin.ran {
		row("metrics phase: created (metric / emulator)", fmt.Sprintf("%.0f / %d", fin.createdMetric, fin.createdContacts))
		row("metrics phase: create 200s (metric / emulator log)", fmt.Sprintf("%.0f / %d", fin.create200Metric, fin.create200Log))
		row("metrics phase: outcomes counted / messages", fmt.Sprintf("%.0f / %d", fin.outcomes, len(w.finals)))
	}
	row("chaos phase: settled after the chaos ended in", chaosSettle.Round(100*time.Millisecond))
	if err := tw.Flush(); err != nil {
		t.Error(err)
	}
	t.Logf("exactly-once under faults, %s:\n%s", c.since(), b.String())
	if testing.Verbose() {
		fmt.Println(b.String())
	}
}

// freshLedger opens the ledger bucket on a connection of its own.
func (c *faultCluster) freshLedger(ctx context.Context) (*ledger.Ledger, error) {
	nc, err := nats.Connect(c.nats.url(), nats.Name("fault-test-ledger"), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return ledger.Open(cctx, js, "")
}
