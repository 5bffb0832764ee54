package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/config"
)

// withNATS is the valid document with lines added under nats:.
func withNATS(lines string) string {
	return strings.Replace(valid, "nats:\n", "nats:\n"+lines, 1)
}

// TestNATSConsumerKeys reads the consumer and retention keys and checks
// each range, every problem reported at once.
func TestNATSConsumerKeys(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		f, err := config.Parse([]byte(withNATS(`  pull_batch: 16
  max_deliver: -1
  max_ack_pending: 5000
  stream_max_age: 48h
  stream_max_bytes: 1073741824
  dead_letter_max_age: 720h
  dead_letter_max_bytes: -1
`)))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(); err != nil {
			t.Fatal(err)
		}
		n := f.NATS
		if n.PullBatch != 16 || n.MaxDeliver != -1 || n.MaxAckPending != 5000 || time.Duration(n.StreamMaxAge) != 48*time.Hour ||
			n.StreamMaxBytes != 1<<30 || time.Duration(n.DeadLetterMaxAge) != 720*time.Hour || n.DeadLetterMaxBytes != -1 {
			t.Errorf("got %+v", n)
		}
	})
	t.Run("unset is valid", func(t *testing.T) {
		f, err := config.Parse([]byte(valid))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(); err != nil {
			t.Fatal(err)
		}
		if f.NATS.MaxDeliver != 0 || f.NATS.PullBatch != 0 {
			t.Errorf("unset keys: got max_deliver %d, pull_batch %d, want 0 (unlimited, the default batch)", f.NATS.MaxDeliver, f.NATS.PullBatch)
		}
	})
	t.Run("out of range, all reported", func(t *testing.T) {
		f, err := config.Parse([]byte(withNATS(`  pull_batch: 5000
  max_deliver: -2
  max_ack_pending: -3
  stream_max_age: 10s
  stream_max_bytes: -2
  dead_letter_max_age: -1h
  dead_letter_max_bytes: -5
`)))
		if err != nil {
			t.Fatal(err)
		}
		err = f.Validate()
		if err == nil {
			t.Fatal("got no error")
		}
		for _, path := range []string{"nats.pull_batch", "nats.max_deliver", "nats.max_ack_pending", "nats.stream_max_age",
			"nats.stream_max_bytes", "nats.dead_letter_max_age", "nats.dead_letter_max_bytes"} {
			if !strings.Contains(err.Error(), path+":") {
				t.Errorf("no problem reported for %s in:\n%v", path, err)
			}
		}
	})
}
