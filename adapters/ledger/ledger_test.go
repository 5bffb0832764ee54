package ledger_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/embedded"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/conformance"
)

// newJetStream starts a real embedded JetStream server for one test.
func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return connect(t, srv.URL())
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestConformance(t *testing.T) {
	conformance.Ledger(t, func(t *testing.T) (ports.Ledger, ports.Ledger) {
		srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
		if err != nil {
			t.Fatalf("embedded nats: %v", err)
		}
		t.Cleanup(srv.Shutdown)
		// Two replicas: two connections, two ledgers on one bucket.
		var ls [2]*ledger.Ledger
		for i := range ls {
			if ls[i], err = ledger.New(context.Background(), connect(t, srv.URL()), ledger.Config{}); err != nil {
				t.Fatalf("ledger: %v", err)
			}
		}
		return ls[0], ls[1]
	})
}

// TestNoEmailInTheBucket: keys are hashes and values carry no email.
func TestNoEmailInTheBucket(t *testing.T) {
	js := newJetStream(t)
	ctx := context.Background()
	l, err := ledger.New(ctx, js, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := ports.Person{Connection: "main", Email: "ada@example.com", ContactID: "c1",
		Events: []ports.EventRecord{{ID: "e1", Outcome: domain.OutcomeCreated, ContactID: "c1", At: time.Now()}}}
	if err := l.Put(ctx, &p); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_"+ledger.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "$KV."+ledger.DefaultBucket+".>")
	if err != nil {
		t.Fatal(err)
	}
	for what, b := range map[string][]byte{"key": []byte(m.Subject), "value": m.Data} {
		if bytes.Contains(b, []byte("ada")) {
			t.Errorf("%s %q holds the email", what, b)
		}
	}
	if want := "$KV." + ledger.DefaultBucket + "." + ledger.Key("main", "ada@example.com"); m.Subject != want {
		t.Errorf("subject: got %s, want %s", m.Subject, want)
	}
}

// TestReadsTheFirstRecordFormat: an upgrade keeps what the earlier format
// knew of each person (its contact, its pending create).
func TestReadsTheFirstRecordFormat(t *testing.T) {
	js := newJetStream(t)
	ctx := context.Background()
	l, err := ledger.New(ctx, js, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, ledger.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_800_000_000_000)
	old := `{"contact_id":"c9","created_by":"e0","pending_event":"e1","pending_at_ms":1800000000000,"pending_external_id":"usr_1","owner":"h-1","lease_end_ms":1800000060000}`
	if _, err := kv.Put(ctx, ledger.Key("main", "ada@example.com"), []byte(old)); err != nil {
		t.Fatal(err)
	}
	p, err := l.Person(ctx, "main", "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if p.ContactID != "c9" || p.Pending == nil || p.Pending.EventID != "e1" || p.Pending.ExternalID != "usr_1" ||
		!p.Pending.NotAfter.Equal(at.Add(2*time.Minute)) {
		t.Errorf("got %+v (pending %+v), want contact c9 and e1's create pending until 2m after it was sent", p, p.Pending)
	}
	// And it is written back in the new format at the revision read.
	p.Pending = nil
	if err := l.Put(ctx, &p); err != nil {
		t.Fatalf("Put over a first-format record: %v", err)
	}
}

// TestNewLeavesOperatorEditsAlone: a bucket an operator edited keeps its
// settings across a restart, and the differences are logged.
func TestNewLeavesOperatorEditsAlone(t *testing.T) {
	js := newJetStream(t)
	ctx := context.Background()
	if _, err := ledger.New(ctx, js, ledger.Config{}); err != nil {
		t.Fatal(err)
	}
	// `nats kv edit referrer_sync_ledger --history=5 --ttl=48h`
	if _, err := js.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ledger.DefaultBucket, History: 5, TTL: 48 * time.Hour, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if _, err := ledger.New(ctx, js, ledger.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, ledger.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 5 || st.TTL() != 48*time.Hour {
		t.Errorf("bucket: history %d ttl %s, want the operator's 5 and 48h", st.History(), st.TTL())
	}
	for _, want := range []string{"left as they are", "ttl 48h0m0s (configured 720h0m0s)", "history 5"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log: want %q in\n%s", want, logs.String())
		}
	}
}

// TestNewFromManyReplicasAtOnce: replicas started together on a fresh
// server all open the one bucket.
func TestNewFromManyReplicasAtOnce(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	const replicas = 6
	jss := make([]jetstream.JetStream, replicas)
	for i := range jss {
		jss[i] = connect(t, srv.URL())
	}
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, errs[i] = ledger.New(ctx, jss[i], ledger.Config{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
}

// TestReadOnly: the dry run's ledger reads and refuses every write; with
// no bucket every person is unknown and no bucket is created.
func TestReadOnly(t *testing.T) {
	js := newJetStream(t)
	ctx := context.Background()
	ro, err := ledger.OpenReadOnly(ctx, js, "")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ro.Person(ctx, "main", "ada@example.com"); err != nil || p.Revision != 0 {
		t.Errorf("Person without a bucket: got %+v, %v; want unknown", p, err)
	}
	if _, err := js.KeyValue(ctx, ledger.DefaultBucket); err == nil {
		t.Error("OpenReadOnly created the bucket")
	}
	l, err := ledger.New(ctx, js, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := ports.Person{Connection: "main", Email: "ada@example.com", ContactID: "c1"}
	if err := l.Put(ctx, &p); err != nil {
		t.Fatal(err)
	}
	if ro, err = ledger.OpenReadOnly(ctx, js, ""); err != nil {
		t.Fatal(err)
	}
	got, err := ro.Person(ctx, "main", "ada@example.com")
	if err != nil || got.ContactID != "c1" {
		t.Errorf("Person: got %+v, %v; want c1", got, err)
	}
	if err := ro.Put(ctx, &got); err == nil {
		t.Error("Put: got no error, want the read-only refusal")
	}
}
