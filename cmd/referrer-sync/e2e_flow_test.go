package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

// TestCampaignActionsEndToEnd publishes events one at a time and checks each
// outcome against the emulator's own state.
func TestCampaignActionsEndToEnd(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	steps := []struct {
		name        string
		body        string
		wantOutcome domain.Outcome
		check       func(t *testing.T, contacts []emulator.Contact)
	}{
		{
			name: "create lead with mapped fields", body: event("e1", "leads_update", "usr_1", "Ada", " Ada@Example.com "),
			wantOutcome: domain.OutcomeCreated,
			check: func(t *testing.T, cs []emulator.Contact) {
				c := only(t, cs, "ada@example.com")
				if c.Role != "lead" || deref(c.Name) != "Ada" || c.ExternalID != "" {
					t.Errorf("got role=%s name=%q external_id=%q, want lead Ada without external id", c.Role, deref(c.Name), c.ExternalID)
				}
				if c.CustomAttributes["referral_link"] != "https://refer.example.com/usr_1" || c.CustomAttributes["lead_source"] != "Referral Factory" {
					t.Errorf("got custom attributes %v", c.CustomAttributes)
				}
			},
		},
		{
			name: "create user with external id and time", body: event("e2", "users_skip", "usr_2", "Grace", "grace@example.com"),
			wantOutcome: domain.OutcomeCreated,
			check: func(t *testing.T, cs []emulator.Contact) {
				c := only(t, cs, "grace@example.com")
				want := time.Date(2026, 11, 28, 9, 59, 58, 0, time.UTC).Unix()
				if c.Role != "user" || c.ExternalID != "usr_2" || c.SignedUpAt == nil || *c.SignedUpAt != want {
					t.Errorf("got role=%s external_id=%q signed_up_at=%v, want user usr_2 %d", c.Role, c.ExternalID, c.SignedUpAt, want)
				}
			},
		},
		{
			name: "existing lead and policy skip writes nothing", body: event("e3", "users_skip", "usr_1", "Ada Lovelace", "ada@example.com"),
			wantOutcome: domain.OutcomeSkipped,
			check: func(t *testing.T, cs []emulator.Contact) {
				c := only(t, cs, "ada@example.com")
				if c.Role != "lead" || deref(c.Name) != "Ada" {
					t.Errorf("got role=%s name=%q, want the untouched lead", c.Role, deref(c.Name))
				}
			},
		},
		{
			name: "existing user and policy update keeps the role", body: event("e4", "leads_update", "usr_2", "Grace H.", "grace@example.com"),
			wantOutcome: domain.OutcomeUpdated,
			check: func(t *testing.T, cs []emulator.Contact) {
				c := only(t, cs, "grace@example.com")
				if c.Role != "user" || deref(c.Name) != "Grace H." || c.CustomAttributes["lead_source"] != "Referral Factory" {
					t.Errorf("got role=%s name=%q attrs=%v, want user renamed with lead_source", c.Role, deref(c.Name), c.CustomAttributes)
				}
			},
		},
		{
			name: "action nothing", body: event("e5", "quiet", "usr_3", "Linus", "linus@example.com"),
			wantOutcome: domain.OutcomeNothing,
			check: func(t *testing.T, cs []emulator.Contact) {
				if n := count(cs, "linus@example.com"); n != 0 {
					t.Errorf("got %d contacts for linus, want 0", n)
				}
			},
		},
		{
			name: "unconfigured campaign", body: event("e6", "winter_sale", "usr_4", "Alan", "alan@example.com"),
			wantOutcome: domain.OutcomeUnconfigured,
			check: func(t *testing.T, cs []emulator.Contact) {
				if n := count(cs, "alan@example.com"); n != 0 {
					t.Errorf("got %d contacts for alan, want 0", n)
				}
			},
		},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			h.publish(s.body, "")
			got := h.settled(i + 1)[i]
			if got.Outcome != s.wantOutcome {
				t.Fatalf("got outcome %s (%s: %v), want %s", got.Outcome, got.Reason, got.Err, s.wantOutcome)
			}
			s.check(t, h.emu.Contacts(testToken))
		})
	}
	t.Run("metrics count each outcome once", func(t *testing.T) {
		for _, c := range []struct {
			labels map[string]string
			want   float64
		}{
			{map[string]string{"outcome": "created"}, 2},
			{map[string]string{"outcome": "skipped", "campaign": "users_skip"}, 1},
			{map[string]string{"outcome": "updated", "campaign": "leads_update", "action": "create_lead"}, 1},
			{map[string]string{"outcome": "nothing", "campaign": "quiet"}, 1},
			{map[string]string{"outcome": "unconfigured", "campaign": "_unconfigured"}, 1},
			{map[string]string{}, 6},
		} {
			if got := h.counter("referrer_sync_events_total", c.labels); got != c.want {
				t.Errorf("events_total%v: got %v, want %v", c.labels, got, c.want)
			}
		}
		if got := h.counter("referrer_sync_crm_requests_total", map[string]string{"operation": "create", "status": "200"}); got != 2 {
			t.Errorf("crm create requests: got %v, want 2", got)
		}
	})
	t.Run("every applied event is in the ledger", func(t *testing.T) {
		for id, want := range map[string]domain.Outcome{"e1": "created", "e2": "created", "e3": "skipped", "e4": "updated"} {
			rec, ok, err := h.in.ledger.Event(context.Background(), "main", id)
			if err != nil || !ok || rec.Outcome != want {
				t.Errorf("ledger %s: got %+v ok=%v err=%v, want %s", id, rec, ok, err, want)
			}
		}
	})
}

// TestDuplicateDeliveriesAreAbsorbed sends one event three ways: a
// publisher retry (same message id, dropped by JetStream), a second
// delivery under a new message id (absorbed by the ledger without any CRM
// call), and a different event for the same person.
func TestDuplicateDeliveriesAreAbsorbed(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	body := event("dup-1", "leads_update", "usr_1", "Ada", "ada@example.com")
	h.publish(body, "dup-1")
	first := h.settled(1)[0]
	if first.Outcome != domain.OutcomeCreated {
		t.Fatalf("first delivery: got %s, want created", first.Outcome)
	}
	callsBefore := len(h.emu.Requests())

	h.publish(body, "dup-1") // publisher retry: deduplicated by the stream
	h.publish(body, "redelivered-dup-1")
	second := h.settled(2)[1]
	if second.Outcome != domain.OutcomeDuplicate || second.ContactID != first.ContactID {
		t.Errorf("second delivery: got %s %s, want duplicate %s", second.Outcome, second.ContactID, first.ContactID)
	}
	if got := len(h.emu.Requests()); got != callsBefore {
		t.Errorf("CRM requests after the duplicate: got %d, want %d (no CRM call)", got, callsBefore)
	}
	h.publish(event("dup-2", "leads_update", "usr_1", "Ada L.", "ada@example.com"), "")
	third := h.settled(3)[2]
	if third.Outcome != domain.OutcomeUpdated || third.ContactID != first.ContactID {
		t.Errorf("new event for the same person: got %s %s, want updated %s", third.Outcome, third.ContactID, first.ContactID)
	}
	if got := len(h.emu.Contacts(testToken)); got != 1 {
		t.Errorf("contacts: got %d, want 1", got)
	}
	// Give a stray redelivery of the stream-deduplicated publish a chance
	// to show up before counting.
	time.Sleep(200 * time.Millisecond)
	if got := len(h.settled(3)); got != 3 {
		t.Errorf("deliveries: got %d, want 3 (the publisher retry must not be delivered)", got)
	}
	if got := h.counter("referrer_sync_events_total", map[string]string{"outcome": "duplicate"}); got != 1 {
		t.Errorf("duplicate outcomes: got %v, want 1", got)
	}
}

// TestBadInputIsDeadLettered checks that every kind of bad input is
// dead-lettered with its reason, acknowledged, and never blocks the stream.
func TestBadInputIsDeadLettered(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	huge := event("big", "leads_update", "usr_9", strings.Repeat("x", 70<<10), "big@example.com")
	cases := []struct {
		name, body, reason string
	}{
		{"malformed json", `{"specversion":"1.0","id":`, domain.ReasonMalformed},
		{"not json at all", "\x00\xffbinary", domain.ReasonMalformed},
		{"wrong type", strings.Replace(event("w1", "leads_update", "u", "A", "a@example.com"), `"referrer.joined"`, `"referrer.left"`, 1), domain.ReasonWrongType},
		{"missing id", strings.Replace(event("", "leads_update", "u", "A", "a@example.com"), `"id":""`, `"id":"  "`, 1), domain.ReasonMissingID},
		{"missing email", event("m1", "leads_update", "u", "A", ""), domain.ReasonMissingEmail},
		{"invalid email", event("m2", "leads_update", "u", "A", "not-an-email"), domain.ReasonInvalidEmail},
		{"oversized", huge, domain.ReasonTooLarge},
	}
	for _, c := range cases {
		h.publish(c.body, "")
	}
	// A valid event after the bad ones is still processed: nothing blocks.
	h.publish(event("ok-1", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
	vs := h.settled(len(cases) + 1)

	dls := h.deadLetters()
	if len(dls) != len(cases) {
		t.Fatalf("dead letters: got %d, want %d", len(dls), len(cases))
	}
	byReason := map[string]int{}
	for _, d := range dls {
		byReason[d.Header.Get(consumer.HeaderReason)]++
		if d.Header.Get(consumer.HeaderOriginalSubject) != "referrer.joined" || d.Header.Get(consumer.HeaderStreamSequence) == "" || d.Header.Get(consumer.HeaderAttempts) != "1" {
			t.Errorf("dead letter headers incomplete: %v", d.Header)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if byReason[c.reason] == 0 {
				t.Errorf("no dead letter with reason %s (got %v)", c.reason, byReason)
			}
		})
	}
	created := 0
	for _, v := range vs {
		if v.Outcome == domain.OutcomeCreated {
			created++
		}
	}
	if created != 1 {
		t.Errorf("got %d created, want 1 (the valid event after the bad ones): %v", created, outcomes(vs))
	}
	if got := h.counter("referrer_sync_events_total", map[string]string{"outcome": "dead_lettered"}); got != float64(len(cases)) {
		t.Errorf("dead_lettered count: got %v, want %d", got, len(cases))
	}
	// Everything was acknowledged: nothing pending, nothing awaiting ack.
	waitFor(t, "consumer to have nothing pending", func() bool {
		cons, err := h.js.Consumer(context.Background(), h.in.consCfg.Stream, h.in.consCfg.Consumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// TestConflictGoesThroughThePolicy makes Intercom's search miss an existing
// user (search lag); the create's 409 names the contact, and the campaign's
// duplicate policy applies to it instead of an error.
func TestConflictGoesThroughThePolicy(t *testing.T) {
	h := newHarness(t, emulator.Config{SearchLag: time.Hour}, "")
	h.publish(event("c1", "users_update", "usr_1", "Ada", "ada@example.com"), "")
	first := h.settled(1)[0]
	if first.Outcome != domain.OutcomeCreated {
		t.Fatalf("got %s, want created", first.Outcome)
	}
	// Forget what the ledger knows of Ada, so only Intercom can tell.
	if err := h.in.ledger.Forget(context.Background(), "main", "ada@example.com"); err != nil {
		t.Fatal(err)
	}
	h.publish(event("c2", "users_update", "usr_1", "Ada Lovelace", "ada@example.com"), "")
	second := h.settled(2)[1]
	if second.Outcome != domain.OutcomeUpdated || second.ContactID != first.ContactID {
		t.Errorf("got %s %s, want updated %s", second.Outcome, second.ContactID, first.ContactID)
	}
	conflicts := 0
	for _, r := range h.emu.Requests() {
		if r.Operation == emulator.OpCreateContact && r.Status == 409 {
			conflicts++
		}
	}
	if conflicts != 1 {
		t.Errorf("409 answers: got %d, want 1", conflicts)
	}
	cs := h.emu.Contacts(testToken)
	if len(cs) != 1 || deref(cs[0].Name) != "Ada Lovelace" {
		t.Errorf("got %d contacts (%+v), want one renamed Ada", len(cs), cs)
	}
}

// TestOnePersonOneContactUnderParallelLoad publishes many events for a few
// people at once, with search lagging far behind: per-person serialisation
// and the ledger's person records keep it to one contact per person.
func TestOnePersonOneContactUnderParallelLoad(t *testing.T) {
	h := newHarness(t, emulator.Config{SearchLag: time.Hour}, "")
	people := []string{"p0@example.com", "p1@example.com", "p2@example.com", "p3@example.com", "p4@example.com"}
	const perPerson = 6
	for i := range perPerson {
		for j, p := range people {
			h.publish(event(p+"-"+string(rune('a'+i)), "leads_update", "usr_"+string(rune('0'+j)), "P", p), "")
		}
	}
	vs := h.settled(len(people) * perPerson)
	byOutcome := map[domain.Outcome]int{}
	for _, v := range vs {
		byOutcome[v.Outcome]++
	}
	if byOutcome[domain.OutcomeCreated] != len(people) || byOutcome[domain.OutcomeUpdated] != len(people)*(perPerson-1) {
		t.Errorf("got outcomes %v, want %d created and %d updated", byOutcome, len(people), len(people)*(perPerson-1))
	}
	cs := h.emu.Contacts(testToken)
	for _, p := range people {
		if n := count(cs, p); n != 1 {
			t.Errorf("%s: got %d contacts, want 1", p, n)
		}
	}
}

// TestTransientFailuresAreRetried fails every search until a retry has
// happened, then heals; the event is applied once.
func TestTransientFailuresAreRetried(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	if err := h.emu.SetFaults(emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpSearchContacts}}); err != nil {
		t.Fatal(err)
	}
	h.publish(event("t1", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
	waitFor(t, "a retry", func() bool {
		return h.counter("referrer_sync_retries_total", nil) >= 1
	})
	if err := h.emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	v := h.settled(1)[0]
	if v.Outcome != domain.OutcomeCreated {
		t.Fatalf("got %s, want created", v.Outcome)
	}
	if n := len(h.emu.Contacts(testToken)); n != 1 {
		t.Errorf("got %d contacts, want 1", n)
	}
	if got := h.counter("referrer_sync_crm_requests_total", map[string]string{"operation": "search", "status": "500"}); got == 0 {
		if got502 := h.counter("referrer_sync_crm_requests_total", map[string]string{"operation": "search"}); got502 < 2 {
			t.Errorf("search requests: got %v, want failed attempts counted", got502)
		}
	}
}

// TestExhaustedAttemptsAreDeadLettered keeps the CRM failing: after
// retry.max_attempts deliveries the event is dead-lettered, not lost and
// not retried forever.
func TestExhaustedAttemptsAreDeadLettered(t *testing.T) {
	h := newHarness(t, emulator.Config{Faults: emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpSearchContacts}}}, "")
	h.publish(event("x1", "leads_update", "usr_1", "Ada", "ada@example.com"), "")
	v := h.settled(1)[0]
	if v.Outcome != domain.OutcomeDeadLettered {
		t.Fatalf("got %s, want dead_lettered", v.Outcome)
	}
	dls := h.deadLetters()
	if len(dls) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(dls))
	}
	hd := dls[0].Header
	if hd.Get(consumer.HeaderReason) != "attempts_exhausted" || hd.Get(consumer.HeaderAttempts) != "3" || hd.Get(consumer.HeaderEventID) != "x1" || hd.Get(consumer.HeaderCampaign) != "leads_update" {
		t.Errorf("dead letter headers: %v", hd)
	}
	first, ferr := time.Parse(time.RFC3339Nano, hd.Get(consumer.HeaderFirstFailedAt))
	last, lerr := time.Parse(time.RFC3339Nano, hd.Get(consumer.HeaderFailedAt))
	if ferr != nil || lerr != nil || !first.Before(last) {
		t.Errorf("first/last failure: got %q and %q, want the first before the last", hd.Get(consumer.HeaderFirstFailedAt), hd.Get(consumer.HeaderFailedAt))
	}
	if got := h.counter("referrer_sync_retries_total", map[string]string{"campaign": "leads_update"}); got != 2 {
		t.Errorf("retries: got %v, want 2", got)
	}
	if n := len(h.emu.Contacts(testToken)); n != 0 {
		t.Errorf("got %d contacts, want 0", n)
	}
}

// TestRejectedTokenStopsStartUp shows a wrong token is a clear start-up
// error that names the connection and not the token.
func TestRejectedTokenStopsStartUp(t *testing.T) {
	emu, err := emulator.New(emulator.Config{Tokens: map[string]emulator.Workspace{"right-token": {ID: "w"}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := newTestServer(t, emu)
	t.Setenv(testTokenEnv, "wrong-secret-token")
	f := mustConfig(t, hs, "")
	_, err = start(context.Background(), f, options{logger: discardLogger()})
	if err == nil {
		t.Fatal("start succeeded with a rejected token")
	}
	if !strings.Contains(err.Error(), "connections.main") || strings.Contains(err.Error(), "wrong-secret-token") {
		t.Errorf("got error %q; want it to name connections.main and not the token", err)
	}
}

func only(t *testing.T, cs []emulator.Contact, email string) emulator.Contact {
	t.Helper()
	var found []emulator.Contact
	for _, c := range cs {
		if c.Email == email {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("got %d contacts with email %s, want 1", len(found), email)
	}
	return found[0]
}

func count(cs []emulator.Contact, email string) int {
	n := 0
	for _, c := range cs {
		if c.Email == email {
			n++
		}
	}
	return n
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
