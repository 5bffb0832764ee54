package ledger_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// TestAllAcrossARestart: the tools' full read (All, Events) works on a
// connection that lived through a server restart.
func TestAllAcrossARestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir := t.TempDir()
	srv, err := embedded.Start(embedded.Config{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	led, err := ledger.New(ctx, js, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(email, id string) {
		p := ports.Person{Connection: "main", Email: email, Events: []ports.EventRecord{{ID: id, Outcome: domain.OutcomeCreated, At: time.Now()}}}
		if err := led.Put(ctx, &p); err != nil {
			t.Fatal(err)
		}
	}
	put("a@example.com", "e1")
	srv.Shutdown()
	if srv, err = embedded.Start(embedded.Config{Port: port, StoreDir: dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	for deadline := time.Now().Add(10 * time.Second); !nc.IsConnected(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect")
		}
	}
	put("b@example.com", "e2")
	for i := range 3 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		evs, err := led.Events(cctx)
		cancel()
		if err != nil || len(evs) != 2 {
			t.Fatalf("read %d: got %d events, %v; want 2", i, len(evs), err)
		}
	}
}
