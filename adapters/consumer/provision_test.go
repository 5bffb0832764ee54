package consumer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// TestProvisionCreatesWithDefaults: a fresh server gets both streams,
// bounded, and the durable with unlimited deliveries.
func TestProvisionCreatesWithDefaults(t *testing.T) {
	_, js := connect(t, testServer(t))
	cfg := testConfig()
	if err := Provision(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		name     string
		maxAge   time.Duration
		maxBytes int64
	}{{"T", DefaultStreamMaxAge, DefaultStreamMaxBytes}, {"T_DLQ", DefaultDeadLetterMaxAge, DefaultDeadLetterMaxBytes}} {
		sc := streamConfig(t, js, s.name)
		if sc.MaxAge != s.maxAge || sc.MaxBytes != s.maxBytes {
			t.Errorf("stream %s: max age %s, max bytes %d; want %s, %d", s.name, sc.MaxAge, sc.MaxBytes, s.maxAge, s.maxBytes)
		}
	}
	cc := consumerInfo(t, js, cfg).Config
	if cc.AckWait != DefaultAckWait || cc.MaxDeliver != -1 || cc.MaxAckPending != DefaultMaxAckPending ||
		cc.FilterSubject != cfg.Subject || cc.AckPolicy != jetstream.AckExplicitPolicy {
		t.Errorf("durable: %+v", cc)
	}
}

// TestProvisionRespectsOperatorEdits edits the durable and the streams
// through the client API, as `nats consumer edit` and `nats stream edit`
// do, and provisions again: unset settings keep the operator's values, each
// difference is logged; settings the configuration sets are applied.
func TestProvisionRespectsOperatorEdits(t *testing.T) {
	ctx := context.Background()
	_, js := connect(t, testServer(t))
	cfg := testConfig()
	if err := Provision(ctx, js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	// The operator: --max-pending=5000 --wait=2m --max-deliver=50, and a
	// shorter retention on both streams.
	cc := consumerInfo(t, js, cfg).Config
	cc.MaxAckPending, cc.AckWait, cc.MaxDeliver = 5000, 2*time.Minute, 50
	if _, err := js.UpdateConsumer(ctx, cfg.Stream, cc); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"T", "T_DLQ"} {
		sc := streamConfig(t, js, name)
		sc.MaxAge, sc.MaxBytes = time.Hour, 64<<20
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("unset settings are left as found and logged", func(t *testing.T) {
		var logs logBuffer
		if err := Provision(ctx, js, cfg, logs.logger()); err != nil {
			t.Fatal(err)
		}
		cc := consumerInfo(t, js, cfg).Config
		if cc.MaxAckPending != 5000 || cc.AckWait != 2*time.Minute || cc.MaxDeliver != 50 {
			t.Errorf("durable after provisioning: max ack pending %d, ack wait %s, max deliver %d; want the operator's 5000, 2m, 50",
				cc.MaxAckPending, cc.AckWait, cc.MaxDeliver)
		}
		for _, name := range []string{"T", "T_DLQ"} {
			if sc := streamConfig(t, js, name); sc.MaxAge != time.Hour || sc.MaxBytes != 64<<20 {
				t.Errorf("stream %s after provisioning: max age %s, max bytes %d; want the operator's 1h, 64 MiB", name, sc.MaxAge, sc.MaxBytes)
			}
		}
		left := map[string]bool{}
		for _, r := range logs.records(t, "left as found") {
			left[r["resource"].(string)+" "+r["setting"].(string)] = true
		}
		for _, want := range []string{
			"consumer c on stream T nats.max_ack_pending", "consumer c on stream T nats.ack_wait", "consumer c on stream T nats.max_deliver",
			"stream T nats.stream_max_age", "stream T nats.stream_max_bytes",
			"stream T_DLQ nats.dead_letter_max_age", "stream T_DLQ nats.dead_letter_max_bytes",
		} {
			if !left[want] {
				t.Errorf("no log line for the difference left alone: %s (logged: %v)", want, left)
			}
		}
		if applied := logs.records(t, "applying"); len(applied) != 0 {
			t.Errorf("applied with nothing set: %v", applied)
		}
	})

	t.Run("set settings are applied, the others still left", func(t *testing.T) {
		set := cfg
		set.AckWait, set.MaxAckPending, set.StreamMaxAge, set.DeadLetterMaxBytes = 45*time.Second, 300, 48*time.Hour, -1
		var logs logBuffer
		if err := Provision(ctx, js, set, logs.logger()); err != nil {
			t.Fatal(err)
		}
		cc := consumerInfo(t, js, cfg).Config
		if cc.AckWait != 45*time.Second || cc.MaxAckPending != 300 || cc.MaxDeliver != 50 {
			t.Errorf("durable: ack wait %s, max ack pending %d, max deliver %d; want 45s, 300 and the operator's 50", cc.AckWait, cc.MaxAckPending, cc.MaxDeliver)
		}
		if sc := streamConfig(t, js, "T"); sc.MaxAge != 48*time.Hour || sc.MaxBytes != 64<<20 {
			t.Errorf("stream T: max age %s, max bytes %d; want 48h and the operator's 64 MiB", sc.MaxAge, sc.MaxBytes)
		}
		if sc := streamConfig(t, js, "T_DLQ"); sc.MaxAge != time.Hour || sc.MaxBytes != -1 {
			t.Errorf("stream T_DLQ: max age %s, max bytes %d; want the operator's 1h and unlimited", sc.MaxAge, sc.MaxBytes)
		}
		if got := len(logs.records(t, "applying")); got != 4 {
			t.Errorf("applied settings logged: got %d, want 4", got)
		}
	})

	t.Run("unlimited deliveries, set explicitly, are applied", func(t *testing.T) {
		set := cfg
		set.MaxDeliver = -1
		if err := Provision(ctx, js, set, nil); err != nil {
			t.Fatal(err)
		}
		if got := consumerInfo(t, js, cfg).Config.MaxDeliver; got != -1 {
			t.Errorf("max deliver: got %d, want -1", got)
		}
	})
}

// TestProvisionConcurrently: replicas starting together on a fresh server
// all succeed, whoever creates first.
func TestProvisionConcurrently(t *testing.T) {
	url := testServer(t)
	const replicas = 8
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range replicas {
		_, js := connect(t, url)
		wg.Go(func() { errs[i] = Provision(context.Background(), js, testConfig(), nil) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestProvisionRefusesWhatCannotWork: a durable without explicit acks, or a
// stream that does not capture the subject, is an error; a wrong filter is
// corrected.
func TestProvisionRefusesWhatCannotWork(t *testing.T) {
	ctx := context.Background()
	_, js := connect(t, testServer(t))
	cfg := testConfig()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.joined", "t.other"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "T", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckAllPolicy}); err != nil {
		t.Fatal(err)
	}
	if err := Provision(ctx, js, cfg, nil); err == nil {
		t.Error("a durable acknowledging with AckAll: got no error")
	}
	if err := js.DeleteConsumer(ctx, "T", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "T", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "t.other"}); err != nil {
		t.Fatal(err)
	}
	if err := Provision(ctx, js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if got := consumerInfo(t, js, cfg).Config.FilterSubject; got != "t.joined" {
		t.Errorf("filter subject: got %q, want t.joined", got)
	}
	other := cfg
	other.Subject = "u.joined"
	other.DeadLetterSubject = "dlq.u.joined"
	if err := Provision(ctx, js, other, nil); err == nil {
		t.Error("a stream that does not capture the subject: got no error")
	}
}
