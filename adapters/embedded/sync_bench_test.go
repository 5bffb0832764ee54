package embedded

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkSyncInterval measures what fsyncing every JetStream write
// (SyncAlways, `sync_interval: always`) costs against the server's default
// (a flush about every two minutes), for the writes the service makes: a
// key-value compare-and-set (the ledger) and a stream publish (the event
// and dead-letter streams), each waited for as the service waits, on one
// server and on a 3-node cluster at 3 replicas. Compare ns/op of the
// default and always variants of the same write; the ratio is the cost.
//
//	go test -run '^$' -bench SyncInterval -benchtime 2000x ./adapters/embedded
func BenchmarkSyncInterval(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, always := range []bool{false, true} {
			mode := "default"
			if always {
				mode = "always"
			}
			b.Run(fmt.Sprintf("nodes=%d/sync=%s", nodes, mode), func(b *testing.B) {
				url, stop := benchServer(b, nodes, always)
				defer stop()
				nc, err := nats.Connect(url)
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench", Replicas: nodes, Storage: jetstream.FileStorage})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Replicas: nodes, Storage: jetstream.FileStorage}); err != nil {
					b.Fatal(err)
				}
				value := make([]byte, 300) // about a ledger record
				runs := 0
				b.Run("kv_cas", func(b *testing.B) {
					runs++ // b.Run calls this more than once; each run a fresh key
					key := fmt.Sprintf("k%d", runs)
					rev, err := kv.Create(ctx, key, value)
					if err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					for range b.N {
						if rev, err = kv.Update(ctx, key, value, rev); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run("publish", func(b *testing.B) {
					body := make([]byte, 600) // about a referrer.joined event
					for range b.N {
						if _, err := js.Publish(ctx, "bench.e", body); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// benchServer starts one server or a cluster and returns a client URL.
func benchServer(b *testing.B, nodes int, always bool) (string, func()) {
	b.Helper()
	if nodes == 1 {
		s, err := Start(Config{StoreDir: b.TempDir(), SyncAlways: always})
		if err != nil {
			b.Fatal(err)
		}
		return s.URL(), s.Shutdown
	}
	c, err := StartCluster(ClusterConfig{Nodes: nodes, StoreDir: b.TempDir(), SyncAlways: always})
	if err != nil {
		b.Fatal(err)
	}
	return c.URLs(), c.Shutdown
}
