package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

var settled = app.Verdict{Outcome: domain.OutcomeCreated}

// TestHealthyReplicaKeepsWorkingWhileAnotherDrains runs two consumers on
// one durable with a small MaxAckPending, as two replicas would, and
// drains one while its in-flight messages are held until the other has
// settled many more: the healthy one is never starved of deliveries, the
// draining one starts nothing new, and what it held but never started is
// redelivered to the other exactly once more.
func TestHealthyReplicaKeepsWorkingWhileAnotherDrains(t *testing.T) {
	url := testServer(t)
	_, js := connect(t, url)
	cfg := testConfig()
	// Room for both replicas' workers and buffers, no more: messages held
	// back by a drain would stall the other replica.
	cfg.MaxAckPending = 2 * (cfg.Workers + cfg.PullBatch)
	if err := Provision(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	const total = 600
	const duringDrain = 150 // settled by the healthy replica while the other drains
	publishN(t, js, cfg.Subject, total)

	var (
		mu         sync.Mutex
		settledBy  = map[uint64][]string{} // stream sequence → replicas that settled it
		maxAttempt = map[uint64]int{}
		healthy    atomic.Int64
		draining   = make(chan struct{})
		starved    atomic.Bool
	)
	record := func(name string, m app.Message) {
		mu.Lock()
		defer mu.Unlock()
		settledBy[m.Sequence] = append(settledBy[m.Sequence], name)
		maxAttempt[m.Sequence] = max(maxAttempt[m.Sequence], m.Attempt)
	}
	var (
		drainBase atomic.Int64
		held      atomic.Int64
	)
	a, stopA := runConsumer(t, url, cfg, handlerFunc(func(_ context.Context, m app.Message) app.Verdict {
		select {
		case <-draining:
			// Held in flight until the healthy replica has made
			// progress.
			held.Add(1)
			target := drainBase.Load() + duringDrain
			for deadline := time.Now().Add(25 * time.Second); healthy.Load() < target; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					starved.Store(true) // a guard against hanging; the count below fails
					break
				}
			}
		default:
		}
		record("a", m)
		return settled
	}))
	_, stopB := runConsumer(t, url, cfg, handlerFunc(func(_ context.Context, m app.Message) app.Verdict {
		record("b", m)
		healthy.Add(1)
		return settled
	}))

	eventually(t, "100 settled by both replicas", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(settledBy) >= 100
	})
	drainBase.Store(healthy.Load())
	close(draining)
	eventually(t, "the draining replica's workers all held", func() bool { return held.Load() == int64(cfg.Workers) })
	if err := stopA(); err != nil {
		t.Fatalf("draining replica: %v", err)
	}
	if got := healthy.Load() - drainBase.Load(); got < duringDrain || starved.Load() {
		t.Fatalf("the healthy replica settled %d while the other drained, want at least %d", got, duringDrain)
	}
	eventually(t, "every event settled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(settledBy) == total
	})
	if err := stopB(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	redelivered := 0
	for seq, by := range settledBy {
		if len(by) != 1 {
			t.Errorf("message %d settled %d times (%v), want once", seq, len(by), by)
		}
		switch maxAttempt[seq] {
		case 1:
		case 2:
			redelivered++
		default:
			t.Errorf("message %d delivered %d times, want at most 2", seq, maxAttempt[seq])
		}
	}
	// Every redelivery is of a message the draining replica held: the
	// ones it handed back, and those the server had on the wire to it as
	// it stopped pulling (the server redelivers them at once). Nothing
	// timed out, nothing was delivered a third time.
	if int64(redelivered) < a.HandedBack() || redelivered > int(a.HandedBack())+cfg.PullBatch {
		t.Errorf("redelivered messages: got %d, want the %d the drain handed back and at most %d more", redelivered, a.HandedBack(), cfg.PullBatch)
	}
	t.Logf("settled by the healthy replica during the drain: %d; handed back: %d", healthy.Load()-drainBase.Load(), a.HandedBack())
}

// TestDrainHandsBackWhatItNeverStarted holds one worker's message while the
// pull buffer fills, then drains: nothing new is fetched, the buffered
// messages go back without a further delivery, unless the server would
// never deliver them again: those are processed, marked as the last
// delivery.
func TestDrainHandsBackWhatItNeverStarted(t *testing.T) {
	cases := []struct {
		name                string
		maxDeliver          int
		wantProcessed       int
		wantHandedBack      int64
		wantLastDeliveryAll bool
	}{
		{name: "unlimited deliveries", maxDeliver: 0, wantProcessed: 1, wantHandedBack: 7},
		{name: "a single delivery allowed", maxDeliver: 1, wantProcessed: 8, wantHandedBack: 0, wantLastDeliveryAll: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := testServer(t)
			_, js := connect(t, url)
			cfg := testConfig()
			cfg.Workers, cfg.PullBatch, cfg.MaxDeliver = 1, 8, tc.maxDeliver
			if err := Provision(context.Background(), js, cfg, nil); err != nil {
				t.Fatal(err)
			}
			publishN(t, js, cfg.Subject, 20)
			release := make(chan struct{})
			var (
				mu   sync.Mutex
				seen []app.Message
			)
			c, stop := runConsumer(t, url, cfg, handlerFunc(func(_ context.Context, m app.Message) app.Verdict {
				mu.Lock()
				seen = append(seen, m)
				first := len(seen) == 1
				mu.Unlock()
				if first {
					<-release
				}
				return settled
			}))
			// One in flight and the rest of the batch buffered.
			eventually(t, "the buffer to fill", func() bool {
				mu.Lock()
				started := len(seen) == 1
				mu.Unlock()
				return started && consumerInfo(t, js, cfg).NumAckPending == cfg.PullBatch
			})
			errc := make(chan error, 1)
			go func() { errc <- stop() }()
			eventually(t, "the drain to begin", c.draining.Load)
			close(release)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != tc.wantProcessed {
				t.Errorf("processed by the draining consumer: got %d, want %d", len(seen), tc.wantProcessed)
			}
			if got := c.HandedBack(); got != tc.wantHandedBack {
				t.Errorf("handed back: got %d, want %d", got, tc.wantHandedBack)
			}
			for _, m := range seen {
				if m.LastDelivery != tc.wantLastDeliveryAll {
					t.Errorf("message %d: LastDelivery %t, want %t", m.Sequence, m.LastDelivery, tc.wantLastDeliveryAll)
				}
			}
			info := consumerInfo(t, js, cfg)
			// What was processed is acknowledged; what was handed back
			// waits, ready for the next pull, for its one redelivery.
			if info.NumAckPending != int(tc.wantHandedBack) {
				t.Errorf("ack pending after the drain: got %d, want the %d handed back", info.NumAckPending, tc.wantHandedBack)
			}
			// Another replica takes the rest: each handed-back message on
			// its second delivery, the others on their first.
			var (
				restMu   sync.Mutex
				attempts = map[int]int{}
				n        atomic.Int64
			)
			runConsumer(t, url, cfg, handlerFunc(func(_ context.Context, m app.Message) app.Verdict {
				restMu.Lock()
				attempts[m.Attempt]++
				restMu.Unlock()
				n.Add(1)
				return settled
			}))
			eventually(t, "the rest settled by another replica", func() bool { return n.Load() == int64(20-tc.wantProcessed) })
			restMu.Lock()
			defer restMu.Unlock()
			if attempts[2] != int(tc.wantHandedBack) || attempts[1] != 20-tc.wantProcessed-int(tc.wantHandedBack) || len(attempts) > 2 {
				t.Errorf("deliveries of the rest by attempt: got %v, want %d on the second, the others on the first", attempts, tc.wantHandedBack)
			}
		})
	}
}

// TestLastDeliveryIsMarked sets a delivery limit on the durable: a message
// sent back on every delivery reaches the application once more, marked as
// its last.
func TestLastDeliveryIsMarked(t *testing.T) {
	url := testServer(t)
	_, js := connect(t, url)
	cfg := testConfig()
	cfg.MaxDeliver = 3
	if err := Provision(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	publishN(t, js, cfg.Subject, 1)
	var (
		mu   sync.Mutex
		seen []app.Message
	)
	runConsumer(t, url, cfg, handlerFunc(func(_ context.Context, m app.Message) app.Verdict {
		mu.Lock()
		seen = append(seen, m)
		mu.Unlock()
		if m.LastDelivery {
			return settled // the application dead-letters it
		}
		return app.Verdict{Retry: true}
	}))
	eventually(t, "three deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 3
	})
	eventually(t, "the last acknowledged", func() bool { return consumerInfo(t, js, cfg).NumAckPending == 0 })
	mu.Lock()
	defer mu.Unlock()
	for i, m := range seen {
		if want := i == 2; m.LastDelivery != want || m.Attempt != i+1 {
			t.Errorf("delivery %d: Attempt %d LastDelivery %t, want %d %t", i+1, m.Attempt, m.LastDelivery, i+1, want)
		}
	}
}

// TestUnlimitedDeliveriesByDefault: the server never ends an event.
func TestUnlimitedDeliveriesByDefault(t *testing.T) {
	url := testServer(t)
	_, js := connect(t, url)
	cfg := testConfig()
	if err := Provision(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if got := consumerInfo(t, js, cfg).Config.MaxDeliver; got != -1 {
		t.Errorf("MaxDeliver: got %d, want -1 (unlimited)", got)
	}
}

// TestApplicationSeesHeaders: lower-case names with the first value for
// the application, the originals untouched alongside.
func TestApplicationSeesHeaders(t *testing.T) {
	url := testServer(t)
	nc, js := connect(t, url)
	cfg := testConfig()
	if err := Provision(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	msg := natsMsg(cfg.Subject, map[string][]string{"Ce-Id": {"e-1"}, "X-Trace-Id": {"a", "b"}, "content-type": {"application/json"}})
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	got := make(chan app.Message, 1)
	runConsumer(t, url, cfg, handlerFunc(func(_ context.Context, m app.Message) app.Verdict {
		got <- m
		return settled
	}))
	m := <-got
	want := map[string]string{"ce-id": "e-1", "x-trace-id": "a", "content-type": "application/json"}
	for k, v := range want {
		if m.Headers[k] != v {
			t.Errorf("Headers[%q]: got %q, want %q", k, m.Headers[k], v)
		}
	}
	if len(m.Headers) != len(want) {
		t.Errorf("Headers: got %v, want %v", m.Headers, want)
	}
	assertHeaders(t, m.OriginalHeaders, msg.Header)
}
