package main

import (
	"context"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// readOperations are the emulator's operations that change nothing.
var readOperations = []string{
	emulator.OpIdentifyAdmin, emulator.OpListDataAttributes, emulator.OpSearchContacts,
	emulator.OpShowContactByExternalID, emulator.OpShowContact,
}

// TestDryRun runs `referrer-sync run --dry-run` next to the service's
// stream, ledger and CRM state: it reports what would happen to each
// message, makes only read requests, writes nothing to the ledger or the
// dead-letter stream, and takes no message away from the service's
// durable consumer.
func TestDryRun(t *testing.T) {
	env := newOpsEnv(t, emulator.Config{})
	ctx := context.Background()
	if err := consumer.Provision(ctx, env.js, consumer.Config{}, nil); err != nil {
		t.Fatal(err)
	}

	// What the service left behind: two contacts, an applied event and a
	// remembered person.
	seed, err := intercom.New(intercom.Config{Connection: "seed", BaseURL: env.emuURL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	lead, err := seed.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "known@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	user, err := seed.Create(ctx, domain.Contact{Role: domain.RoleUser, Email: "user@example.com", ExternalID: "usr_u"})
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.New(ctx, env.js, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dup := ports.Person{Connection: "main", Email: "dup@example.com", ContactID: lead.ID,
		Events: []ports.EventRecord{{ID: "dry-dup", Outcome: domain.OutcomeCreated, ContactID: lead.ID, At: time.Now()}}}
	if err := led.Put(ctx, &dup); err != nil {
		t.Fatal(err)
	}
	known := ports.Person{Connection: "main", Email: "remembered@example.com", ContactID: "remembered-contact"}
	if err := led.Put(ctx, &known); err != nil {
		t.Fatal(err)
	}
	ledgerSeq := streamLastSeq(t, env.js, "KV_referrer_sync_ledger")
	seededRequests := len(env.emu.Requests())

	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(env.doc("")), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	runCtx, stop := context.WithCancel(ctx)
	code := make(chan int, 1)
	go func() { code <- run(runCtx, []string{"run", "--dry-run", "--config", path}, io.Discard, stderr) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-code:
		case <-time.After(30 * time.Second):
			t.Error("dry run did not stop")
		}
	})
	var addr string
	opsWait(t, 15*time.Second, "the dry run running", func() bool {
		for _, r := range withMsg(logRecords(t, stderr.String()), "referrer-sync running") {
			u, err := url.Parse(r.str("metrics"))
			if err == nil {
				addr = u.Host
			}
		}
		return addr != ""
	})

	events := []struct {
		body, id string
	}{
		{event("d-new", "leads_update", "usr_n", "Nia", "new@example.com"), "d-new"},
		{event("d-known", "leads_update", "usr_k", "Kim", "known@example.com"), "d-known"},
		{event("d-user", "users_skip", "usr_u", "Uma", "user@example.com"), "d-user"},
		{event("d-remembered", "users_update", "usr_r", "Rae", "remembered@example.com"), "d-remembered"},
		{event("d-quiet", "quiet", "usr_q", "Quin", "quiet@example.com"), "d-quiet"},
		{event("d-winter", "winter_sale", "usr_w", "Wes", "winter@example.com"), "d-winter"},
		{`{"specversion":"1.0","id":"d-bad",`, "d-bad"},
		{event("dry-dup", "leads_update", "usr_d", "Dee", "dup@example.com"), "dry-dup"},
	}
	for _, e := range events {
		env.publish(e.body, e.id)
	}
	opsWait(t, 20*time.Second, "every event planned", func() bool {
		v, _ := metricValue(opsScrape(t, addr), "referrer_sync_dry_run_events_total", nil)
		return v == float64(len(events))
	})
	mfs := opsScrape(t, addr)

	t.Run("outcomes", func(t *testing.T) {
		got := seriesOf(mfs, "referrer_sync_dry_run_events_total")
		want := []string{
			"action=,campaign=_unconfigured,outcome=unconfigured,reason= 1",
			"action=,campaign=_unknown,outcome=would_dead_letter,reason=malformed 1",
			"action=create_lead,campaign=leads_update,outcome=duplicate,reason= 1",
			"action=create_lead,campaign=leads_update,outcome=would_create,reason= 1",
			"action=create_lead,campaign=leads_update,outcome=would_update,reason= 1",
			"action=create_user,campaign=users_skip,outcome=would_skip,reason= 1",
			"action=create_user,campaign=users_update,outcome=would_update,reason= 1",
			"action=nothing,campaign=quiet,outcome=nothing,reason= 1",
		}
		if !slices.Equal(got, want) {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, name := range []string{"referrer_sync_events_total", "referrer_sync_dead_letters_total", "referrer_sync_retries_total"} {
			if _, n := metricValue(mfs, name, nil); n != 0 {
				t.Errorf("%s: got %d series, want none (a dry run settles nothing)", name, n)
			}
		}
		if v, _ := metricValue(mfs, "referrer_sync_duplicates_absorbed_total", nil); v != 0 {
			t.Errorf("duplicates absorbed: got %v, want 0", v)
		}
	})

	t.Run("logs say what would happen", func(t *testing.T) {
		byEvent := map[string]logRecord{}
		for _, r := range withMsg(logRecords(t, stderr.String()), "dry run: ") {
			if r.str("outcome") != "" {
				byEvent[r.str("event_id")] = r
			}
		}
		for id, want := range map[string]string{
			"d-new": "dry run: would create lead", "d-known": "dry run: would update the existing contact",
			"d-user": "dry run: would skip: the contact exists", "": "dry run: would dead-letter (malformed)", // no id: truncated JSON
			"dry-dup": "dry run: already applied (duplicate)",
		} {
			if got := byEvent[id].str("msg"); got != want {
				t.Errorf("%s: got %q, want %q", id, got, want)
			}
		}
		if got := byEvent["d-known"].str("contact_id"); got != lead.ID {
			t.Errorf("d-known contact: got %q, want the seeded lead %q", got, lead.ID)
		}
		if got := byEvent["d-user"].str("contact_id"); got != user.ID {
			t.Errorf("d-user contact: got %q, want the seeded user %q", got, user.ID)
		}
		if got := byEvent["d-remembered"].str("contact_id"); got != "remembered-contact" {
			t.Errorf("d-remembered contact: got %q, want the ledger's", got)
		}
	})

	t.Run("read-only CRM calls", func(t *testing.T) {
		reqs := env.emu.Requests()[seededRequests:]
		if len(reqs) == 0 {
			t.Fatal("the dry run made no CRM request")
		}
		for _, r := range reqs {
			if !slices.Contains(readOperations, r.Operation) {
				t.Errorf("request %s %s (%s): not a read", r.Method, r.Path, r.Operation)
			}
		}
		if n := len(env.emu.Contacts(testToken)); n != 2 {
			t.Errorf("contacts: got %d, want the 2 seeded", n)
		}
	})

	t.Run("no ledger or dead-letter writes", func(t *testing.T) {
		if got := streamLastSeq(t, env.js, "KV_referrer_sync_ledger"); got != ledgerSeq {
			t.Errorf("ledger stream last sequence: got %d, want %d (unchanged)", got, ledgerSeq)
		}
		if got := streamLastSeq(t, env.js, "REFERRALS_DLQ"); got != 0 {
			t.Errorf("dead-letter stream: got last sequence %d, want 0", got)
		}
	})

	t.Run("the service's durable keeps every message", func(t *testing.T) {
		live := consumerInfo(t, env.js, "referrer-sync")
		if live.NumPending != uint64(len(events)) {
			t.Errorf("service durable pending: got %d, want %d", live.NumPending, len(events))
		}
		opsWait(t, 5*time.Second, "the dry run's durable settled", func() bool {
			dry := consumerInfo(t, env.js, "referrer-sync-dry-run")
			return dry.NumPending == 0 && dry.NumAckPending == 0
		})
	})

	stop()
	if got := <-code; got != 0 {
		t.Errorf("exit code: got %d, want 0", got)
	}
	code <- 0 // for the cleanup
	if _, err := env.js.Consumer(ctx, "REFERRALS", "referrer-sync-dry-run"); err != nil {
		t.Errorf("the dry run's durable after exit: %v (it is never deleted)", err)
	}
}

// TestDryRunNeedsTheStream: a dry run never creates the service's stream.
func TestDryRunNeedsTheStream(t *testing.T) {
	env := newOpsEnv(t, emulator.Config{})
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(env.doc("")), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	if got := run(context.Background(), []string{"run", "--dry-run", "--config", path}, io.Discard, stderr); got != 1 {
		t.Errorf("exit code: got %d, want 1", got)
	}
	if !strings.Contains(stderr.String(), "stream REFERRALS does not exist") {
		t.Errorf("got %q, want the missing stream named", stderr.String())
	}
	if _, err := env.js.Stream(context.Background(), "REFERRALS"); err == nil {
		t.Error("the dry run created the stream")
	}
}

func streamLastSeq(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func consumerInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(context.Background(), "REFERRALS", name)
	if err != nil {
		t.Fatalf("consumer %s: %v", name, err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}
