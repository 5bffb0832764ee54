package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	hsemu "github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

const (
	hubspotToken    = "e2e-hubspot-token"
	hubspotTokenEnv = "REFERRER_SYNC_E2E_HUBSPOT_TOKEN"
)

// moveConnections are the connections before and after the move: the file
// gains a hubspot connection with no code change.
const (
	moveIntercomConnection = `
  intercom:
    type: intercom
    base_url: %q
    access_token_env: ` + testTokenEnv + `
    commit_grace: 1s`
	moveHubSpotConnection = `
  hubspot:
    type: hubspot
    base_url: %q
    access_token_env: ` + hubspotTokenEnv + `
    external_id_property: referrer_id
    commit_grace: 1s`
	// The campaign before: Intercom's vocabulary.
	moveCampaignIntercom = `
campaigns:
  spring:
    connection: intercom
    referrers:
      action: create_user
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.id, to: external_id}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.referral_link}`
	// The campaign after: HubSpot's property names.
	moveCampaignHubSpot = `
campaigns:
  spring:
    connection: hubspot
    referrers:
      action: create_user
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.id, to: external_id}
        - {from: referrer.first_name, to: firstname}
        - {from: referrer.url, to: referral_link}
        - {from: referrer.code, to: referral_code}`
)

func moveConfig(t *testing.T, storeDir, connections, campaigns string) *config.File {
	t.Helper()
	doc := fmt.Sprintf(`
nats:
  url: ""
  store_dir: %q
  workers: 4
  ack_wait: 10s
http:
  listen: 127.0.0.1:0
retry:
  max_attempts: 3
  initial_delay: 100ms
  max_delay: 500ms
ledger:
  lease: 1s # a lost create is resolved once its lease has passed
connections:%s
%s
`, storeDir, connections, campaigns)
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return f
}

// moveRun is one running service process of the move.
type moveRun struct {
	t      *testing.T
	in     *instance
	js     jetstream.JetStream
	cancel context.CancelFunc
	done   chan error

	mu       sync.Mutex
	verdicts []app.Verdict
	signal   chan struct{}
}

func startMoveRun(t *testing.T, f *config.File) *moveRun {
	t.Helper()
	r := &moveRun{t: t, signal: make(chan struct{}, 1), done: make(chan error, 1)}
	log := discardLogger()
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := start(ctx, f, options{logger: log, observe: func(_ app.Message, v app.Verdict) {
		r.mu.Lock()
		r.verdicts = append(r.verdicts, v)
		r.mu.Unlock()
		select {
		case r.signal <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	r.in, r.cancel = in, cancel
	go func() { r.done <- in.run(ctx) }()
	t.Cleanup(r.stop)
	select {
	case <-in.consumer.Running():
	case err := <-r.done:
		t.Fatalf("run ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("consumer not running within 10s")
	}
	nc, err := nats.Connect(in.server.URL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return r
}

// stop shuts the process down as SIGTERM does; it may be called twice.
func (r *moveRun) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		r.t.Errorf("run: %v", err)
	}
}

// deliver publishes body under a JetStream message id of its own and waits
// for the one outcome it settles with.
func (r *moveRun) deliver(body, msgID string) app.Verdict {
	r.t.Helper()
	r.mu.Lock()
	seen := len(r.verdicts)
	r.mu.Unlock()
	msg := nats.NewMsg(r.in.consCfg.Subject)
	msg.Data = []byte(body)
	msg.Header.Set(nats.MsgIdHdr, msgID)
	if _, err := r.js.PublishMsg(context.Background(), msg); err != nil {
		r.t.Fatalf("publish: %v", err)
	}
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		for _, v := range r.verdicts[seen:] {
			if !v.Retry {
				r.mu.Unlock()
				return v
			}
		}
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.t.Fatalf("message %s: no outcome within 30s", msgID)
		}
	}
}

func hubspotContact(t *testing.T, emu *hsemu.Server, email string) (hsemu.Contact, int) {
	t.Helper()
	var found []hsemu.Contact
	for _, c := range emu.Contacts(hubspotToken) {
		if c.Properties["email"] == email {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		return hsemu.Contact{}, 0
	}
	return found[0], len(found)
}

func intercomWrites(emu *emulator.Server) int {
	n := 0
	for _, r := range emu.Requests() {
		if r.Operation == emulator.OpCreateContact || r.Operation == emulator.OpUpdateContact {
			n++
		}
	}
	return n
}

func hubspotRequests(emu *hsemu.Server, op string, committed bool) int {
	n := 0
	for _, r := range emu.Requests() {
		if r.Operation == op && (!committed || r.Committed) {
			n++
		}
	}
	return n
}

// TestHubSpotE2EMoveCampaignFromIntercom moves a campaign from Intercom to
// HubSpot by editing the configuration file and restarting, on the
// embedded NATS server with both emulators: events before the move reach
// Intercom, events after it reach HubSpot, and duplicates, a person's
// second event and a create whose response is lost still give one contact
// per person, written once.
func TestHubSpotE2EMoveCampaignFromIntercom(t *testing.T) {
	t.Setenv("NATS_URL", "")
	t.Setenv(testTokenEnv, testToken)
	t.Setenv(hubspotTokenEnv, hubspotToken)
	icEmu, err := emulator.New(emulator.Config{Seed: 7,
		Tokens: map[string]emulator.Workspace{testToken: {ID: "e2e", Attributes: []string{"referral_link"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ic := newTestServer(t, icEmu)
	hsEmu, err := hsemu.New(hsemu.Config{Seed: 7,
		Tokens: map[string]hsemu.Account{hubspotToken: {ID: 4242, Properties: []string{"referral_link", "referral_code"}, UniqueProperties: []string{"referrer_id"}}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(hsEmu)
	t.Cleanup(func() { hs.Close(); hsEmu.Close() })
	store := t.TempDir()
	icConn := fmt.Sprintf(moveIntercomConnection, ic.URL)
	hsConn := fmt.Sprintf(moveHubSpotConnection, hs.URL)

	// Before: the campaign writes to Intercom; HubSpot is not configured.
	before := startMoveRun(t, moveConfig(t, store, icConn, moveCampaignIntercom))
	for _, e := range []struct{ id, ref, name, email string }{{"m1", "usr_1", "Ada", "ada@example.com"}, {"m2", "usr_2", "Grace", "grace@example.com"}} {
		if v := before.deliver(event(e.id, "spring", e.ref, e.name, e.email), e.id); v.Outcome != domain.OutcomeCreated {
			t.Fatalf("%s before the move: got %s (%s: %v), want created", e.id, v.Outcome, v.Reason, v.Err)
		}
	}
	if v := before.deliver(event("m1", "spring", "usr_1", "Ada", "ada@example.com"), "m1-again"); v.Outcome != domain.OutcomeDuplicate {
		t.Fatalf("m1 redelivered before the move: got %s, want duplicate", v.Outcome)
	}
	if n := len(icEmu.Contacts(testToken)); n != 2 {
		t.Fatalf("Intercom contacts before the move: got %d, want 2", n)
	}
	if n := len(hsEmu.Requests()); n != 0 {
		t.Fatalf("HubSpot requests before the move: got %d, want 0", n)
	}
	before.stop()

	t.Run("moving the campaign without rewriting its targets is refused", func(t *testing.T) {
		f, err := config.Parse([]byte(fmt.Sprintf("connections:%s%s\n%s", icConn, hsConn,
			strings.Replace(moveCampaignIntercom, "connection: intercom", "connection: hubspot", 1))))
		if err != nil {
			t.Fatal(err)
		}
		err = f.Validate()
		for _, want := range []string{`to "name" cannot be mapped`, `to "custom_attributes.referral_link" is not a known target`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("validate: got %v, want a problem %q", err, want)
			}
		}
	})

	// After: the file gains the hubspot connection and the campaign moves
	// to it, in HubSpot's property names. The same store: the ledger and
	// the stream carry over.
	after := startMoveRun(t, moveConfig(t, store, icConn+hsConn, moveCampaignHubSpot))
	icWrites := intercomWrites(icEmu)
	if hubspotRequests(hsEmu, hsemu.OpCreateProperty, true) != 1 {
		t.Errorf("start-up: the marker property was not created once in HubSpot")
	}

	steps := []struct {
		name, body, msgID string
		faults            *hsemu.Faults
		want              domain.Outcome
		email             string
		check             func(t *testing.T, c hsemu.Contact)
	}{
		{
			name: "a new person is created in HubSpot", body: event("m3", "spring", "usr_3", "Linus", "linus@example.com"), msgID: "m3",
			want: domain.OutcomeCreated, email: "linus@example.com",
			check: func(t *testing.T, c hsemu.Contact) {
				want := map[string]string{"email": "linus@example.com", "firstname": "Linus", "lifecyclestage": "customer", "referrer_id": "usr_3",
					"referral_link": "https://refer.example.com/usr_3", "referral_code": "C-usr_3", "referrer_sync_event_id": "m3"}
				for k, v := range want {
					if c.Properties[k] != v {
						t.Errorf("property %s: got %q, want %q (all: %v)", k, c.Properties[k], v, c.Properties)
					}
				}
			},
		},
		{
			name: "the same event delivered again is absorbed", body: event("m3", "spring", "usr_3", "Linus", "linus@example.com"), msgID: "m3-again",
			want: domain.OutcomeDuplicate, email: "linus@example.com",
		},
		{
			name: "the person's next event updates the contact", body: event("m4", "spring", "usr_3", "Linus T.", "linus@example.com"), msgID: "m4",
			want: domain.OutcomeUpdated, email: "linus@example.com",
			check: func(t *testing.T, c hsemu.Contact) {
				if c.Properties["firstname"] != "Linus T." || c.Properties["referrer_sync_event_id"] != "m3" || c.Properties["lifecyclestage"] != "customer" {
					t.Errorf("got %v, want firstname updated, the marker and the stage kept", c.Properties)
				}
			},
		},
		{
			name: "a create whose response is lost is resolved without a second contact", body: event("m5", "spring", "usr_5", "Alan", "alan@example.com"), msgID: "m5",
			faults: &hsemu.Faults{LostResponseRate: 1, Operations: []string{hsemu.OpCreateContact}},
			want:   domain.OutcomeCreated, email: "alan@example.com",
			check: func(t *testing.T, c hsemu.Contact) {
				if c.Properties["referrer_sync_event_id"] != "m5" {
					t.Errorf("marker: got %q, want m5", c.Properties["referrer_sync_event_id"])
				}
			},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.faults != nil {
				if err := hsEmu.SetFaults(*s.faults); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = hsEmu.SetFaults(hsemu.Faults{}) }()
			}
			v := after.deliver(s.body, s.msgID)
			if v.Outcome != s.want {
				t.Fatalf("got %s (%s: %v), want %s", v.Outcome, v.Reason, v.Err, s.want)
			}
			c, n := hubspotContact(t, hsEmu, s.email)
			if n != 1 {
				t.Fatalf("HubSpot contacts for %s: got %d, want 1", s.email, n)
			}
			if s.check != nil {
				s.check(t, c)
			}
		})
	}

	t.Run("exactly once across the move", func(t *testing.T) {
		if got := len(hsEmu.Contacts(hubspotToken)); got != 2 {
			t.Errorf("HubSpot contacts: got %d, want 2 (linus, alan)", got)
		}
		if got := hubspotRequests(hsEmu, hsemu.OpCreateContact, true); got != 2 {
			t.Errorf("committed HubSpot creates: got %d, want 2", got)
		}
		if got := intercomWrites(icEmu); got != icWrites {
			t.Errorf("Intercom writes after the move: got %d more, want none", got-icWrites)
		}
		if got := len(icEmu.Contacts(testToken)); got != 2 {
			t.Errorf("Intercom contacts: got %d, want the 2 from before the move", got)
		}
		for conn, ids := range map[string][]string{"intercom": {"m1", "m2"}, "hubspot": {"m3", "m4", "m5"}} {
			for _, id := range ids {
				rec, ok, err := after.in.ledger.Event(context.Background(), conn, id)
				if err != nil || !ok || !rec.Terminal() {
					t.Errorf("ledger %s/%s: got %+v, %v, %v, want a settled record", conn, id, rec, ok, err)
				}
			}
		}
	})
}

// hubspotOnlyConfig is a file with one hubspot connection and one campaign
// that maps the given property names.
func hubspotOnlyConfig(t *testing.T, storeDir, url string, properties ...string) *config.File {
	t.Helper()
	campaign := moveCampaignHubSpot[:strings.Index(moveCampaignHubSpot, "        - {from: referrer.id")]
	for _, p := range properties {
		campaign += fmt.Sprintf("        - {from: referrer.code, to: %s}\n", p)
	}
	return moveConfig(t, storeDir, fmt.Sprintf(moveHubSpotConnection, url), campaign)
}

// TestHubSpotStartUpChecksProperties: start-up creates the marker property
// and refuses to run while a mapped property is missing, naming every one;
// a dry run reports them instead; a reload checks again and logs; a token
// that may not create properties is told which scope it lacks.
func TestHubSpotStartUpChecksProperties(t *testing.T) {
	t.Setenv("NATS_URL", "")
	t.Setenv(hubspotTokenEnv, hubspotToken)
	const readOnlyToken, freshToken = "e2e-hubspot-read-only", "e2e-hubspot-fresh"
	emu, err := hsemu.New(hsemu.Config{Seed: 7, Tokens: map[string]hsemu.Account{
		hubspotToken:  {ID: 1, Properties: []string{"referral_link"}, UniqueProperties: []string{"referrer_id"}},
		readOnlyToken: {ID: 2, Properties: []string{"referral_link"}, UniqueProperties: []string{"referrer_id"}, ReadOnly: true},
		freshToken:    {ID: 3, Properties: []string{"referral_link"}, UniqueProperties: []string{"referrer_id"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(emu)
	t.Cleanup(func() { hs.Close(); emu.Close() })
	store := t.TempDir()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	missing := []string{"referral_link", "referral_code", "partner_tier"}

	t.Run("a mapped property the account lacks stops start-up, every one named", func(t *testing.T) {
		in, err := start(context.Background(), hubspotOnlyConfig(t, store, hs.URL, missing...), options{logger: log})
		if err == nil {
			in.close()
			t.Fatal("start: got no error, want the missing properties")
		}
		if !strings.Contains(err.Error(), "connections.hubspot: the HubSpot account's contact properties do not fit the campaigns: missing contact properties: partner_tier, referral_code") {
			t.Errorf("start: got %v, want connections.hubspot and exactly partner_tier, referral_code missing", err)
		}
	})

	t.Run("a reload checks the new settings and logs what is missing", func(t *testing.T) {
		in, err := start(context.Background(), hubspotOnlyConfig(t, store, hs.URL, "referral_link"), options{logger: log})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		defer in.close()
		in.checkAttributes(context.Background(), hubspotOnlyConfig(t, store, hs.URL, missing...))
		if out := logs.String(); !strings.Contains(out, "do not fit the new settings") || !strings.Contains(out, "missing contact properties: partner_tier, referral_code") {
			t.Errorf("log: got\n%s\nwant a warning naming partner_tier and referral_code", out)
		}
	})

	t.Run("a dry run reports the missing properties and creates nothing", func(t *testing.T) {
		t.Setenv(hubspotTokenEnv, freshToken) // an account without the marker property
		creates := hubspotRequests(emu, hsemu.OpCreateProperty, false)
		in, err := start(context.Background(), hubspotOnlyConfig(t, store, hs.URL, missing...), options{logger: log, dryRun: true})
		if err != nil {
			t.Fatalf("start --dry-run: %v", err)
		}
		in.close()
		if out := logs.String(); !strings.Contains(out, "dry run: the HubSpot account's contact properties do not fit the campaigns") ||
			!strings.Contains(out, "missing contact properties: partner_tier, referral_code, referrer_sync_event_id") {
			t.Errorf("log: got\n%s\nwant the dry run's report naming the marker property too", out)
		}
		if got := hubspotRequests(emu, hsemu.OpCreateProperty, false); got != creates {
			t.Errorf("property creates during the dry run: got %d, want none", got-creates)
		}
	})

	t.Run("a token that may not create the marker property is told the scope", func(t *testing.T) {
		t.Setenv(hubspotTokenEnv, readOnlyToken)
		in, err := start(context.Background(), hubspotOnlyConfig(t, store, hs.URL, "referral_link"), options{logger: log})
		if err == nil {
			in.close()
			t.Fatal("start: got no error, want the missing scope")
		}
		if !strings.Contains(err.Error(), "crm.schemas.contacts.write") || !strings.Contains(err.Error(), `"referrer_sync_event_id"`) {
			t.Errorf("start: got %v, want the scope and the property named", err)
		}
	})
}
