package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

// Env is one embedded JetStream server with the benchmark's streams. Every
// configuration consumes the same stream from its first message through a
// durable consumer of its own, so each starts from identical input without
// publishing it again.
type Env struct {
	dir    string
	server *embedded.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	seq    int
	// published is how many events of the mix the main stream holds.
	published int
}

// The main stream: the realistic mix of eventBody.
const (
	mainStream  = "REFERRALS"
	mainSubject = eventSubject
)

// NewEnv starts the embedded server on a temporary file store.
func NewEnv() (*Env, error) {
	dir, err := os.MkdirTemp("", "referrer-sync-bench-")
	if err != nil {
		return nil, err
	}
	e := &Env{dir: dir}
	if e.server, err = embedded.Start(embedded.Config{StoreDir: dir}); err != nil {
		e.Close()
		return nil, err
	}
	if e.nc, err = nats.Connect(e.server.URL(), nats.Name("referrer-sync-bench")); err != nil {
		e.Close()
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close stops the server and removes its store.
func (e *Env) Close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.server != nil {
		e.server.Shutdown()
	}
	_ = os.RemoveAll(e.dir)
}

// connect opens a connection of its own, as the service does for its
// consumer.
func (e *Env) connect(name string) (*nats.Conn, error) {
	return nats.Connect(e.server.URL(), nats.Name(name))
}

// name returns a fresh name for a consumer or bucket.
func (e *Env) name(prefix string) string {
	e.seq++
	return fmt.Sprintf("%s_%d", prefix, e.seq)
}

// Publish makes the main stream hold at least n events of the mix,
// appending the missing ones in order.
func (e *Env) Publish(ctx context.Context, n int) error {
	if e.published == 0 {
		if err := e.createStream(ctx, mainStream, mainSubject); err != nil {
			return err
		}
	}
	if err := e.publish(ctx, mainSubject, e.published, n, eventBody); err != nil {
		return err
	}
	e.published = max(e.published, n)
	return nil
}

func (e *Env) createStream(ctx context.Context, name, subject string) error {
	_, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("bench: create stream %s: %w", name, err)
	}
	return nil
}

// publish appends bodies [from, to) with asynchronous publishes, a bounded
// number in flight, and waits until the stream has stored them all.
func (e *Env) publish(ctx context.Context, subject string, from, to int, body func(int) []byte) error {
	const window = 2048
	pending := make([]jetstream.PubAckFuture, 0, window)
	drain := func() error {
		for _, f := range pending {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("bench: publish: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		pending = pending[:0]
		return nil
	}
	for i := from; i < to; i++ {
		f, err := e.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: body(i)})
		if err != nil {
			return fmt.Errorf("bench: publish: %w", err)
		}
		if pending = append(pending, f); len(pending) == window {
			if err := drain(); err != nil {
				return err
			}
		}
	}
	return drain()
}

// deleteConsumer removes a configuration's durable; errors are of no
// consequence to the measurements.
func (e *Env) deleteConsumer(stream, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.js.DeleteConsumer(ctx, stream, name)
}

// emu is the Intercom emulator on a loopback HTTP listener.
type emu struct {
	*emulator.Server
	srv *http.Server
	url string
}

func startEmulator(cfg emulator.Config) (*emu, error) {
	s, err := emulator.New(cfg)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &emu{Server: s, srv: &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}, url: "http://" + ln.Addr().String()}
	// Serve returns when close is called; nothing else stops it.
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

func (e *emu) close() {
	e.Close() // the emulator's
	_ = e.srv.Close()
}
