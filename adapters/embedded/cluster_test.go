package embedded

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterSurvivesItsLeader starts a 3-node cluster, creates a stream
// and a key-value bucket at 3 replicas, stops the node leading the bucket,
// writes through the others, and restarts the node: it rejoins and the
// writes made without it are there.
func TestClusterSurvivesItsLeader(t *testing.T) {
	c, err := StartCluster(ClusterConfig{StoreDir: t.TempDir(), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	if c.Nodes() != 3 {
		t.Fatalf("nodes: got %d, want 3", c.Nodes())
	}
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k0", []byte("v0")); err != nil {
		t.Fatal(err)
	}
	leader := c.StreamLeader("KV_b")
	if leader < 0 {
		t.Fatal("no leader for the bucket's stream")
	}
	if c.StreamLeader("S") < 0 {
		t.Fatal("no leader for stream S")
	}
	c.Stop(leader)
	if c.Running(leader) {
		t.Fatal("stopped node still running")
	}
	// Writes go on through the two others once they elect a new leader.
	for i := 1; i <= 5; i++ {
		var err error
		for range 100 {
			if _, err = kv.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("put k%d with node %d down: %v", i, leader, err)
		}
	}
	if l := c.StreamLeader("KV_b"); l == leader || l < 0 {
		t.Errorf("leader with node %d down: %d", leader, l)
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(leader); err == nil {
		t.Error("restarting a running node: got nil error")
	}
	if err := c.WaitMetaLeader(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The restarted node alone serves the bucket's history.
	only, err := nats.Connect(c.URL(leader))
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	ojs, _ := jetstream.New(only)
	okv, err := ojs.KeyValue(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= 5; i++ {
		var e jetstream.KeyValueEntry
		for range 100 {
			if e, err = okv.Get(ctx, fmt.Sprintf("k%d", i)); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || e == nil {
			t.Errorf("get k%d after the restart: %v", i, err)
		}
	}
}
