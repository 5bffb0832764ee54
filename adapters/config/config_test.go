package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/domain"
)

const valid = `
nats:
  url: nats://127.0.0.1:4222
  workers: 8
  ack_wait: 30s
http:
  listen: 127.0.0.1:9464
connections:
  main:
    type: intercom
    region: eu
    access_token_env: INTERCOM_ACCESS_TOKEN
    api_version: "2.14"
campaigns:
  camp_123:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.url, to: custom_attributes.referral_link}
        - {value: "Referral Factory", to: custom_attributes.lead_source}
        - {value: true, to: unsubscribed_from_emails}
        - {value: 42, to: custom_attributes.score}
`

func TestParseValid(t *testing.T) {
	t.Setenv("NATS_URL", "nats://override:4222")
	f, err := config.Parse([]byte(valid))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if f.NATS.URL != "nats://override:4222" {
		t.Errorf("NATS_URL override: got %q", f.NATS.URL)
	}
	cat := f.Catalog()
	c, ok := cat.Lookup("camp_123")
	if !ok || c.Action != domain.ActionCreateLead || c.OnDuplicate != domain.OnDuplicateUpdate || len(c.Fields) != 5 {
		t.Fatalf("got %+v, want the lead campaign with 5 fields", c)
	}
	if got := c.Fields[3].Value; got != true {
		t.Errorf("bool value: got %#v, want true", got)
	}
	if got := c.Fields[4].Value; got != 42 {
		t.Errorf("int value: got %#v, want 42", got)
	}
	if _, ok := cat.Lookup("other"); ok {
		t.Error("unlisted campaign found without a default")
	}
	if w := f.Warnings(); len(w) != 0 {
		t.Errorf("warnings: got %v, want none", w)
	}
}

func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	t.Setenv("NATS_URL", "")
	doc := `
nats: {workers: -1, ack_wait: 10ms}
http: {listen: "nonsense"}
retry: {max_attempts: 0, initial_delay: 2m, max_delay: 1m}
log: {level: loud}
connections:
  main: {type: intercom, region: mars, access_token_env: "", api_version: "3.0"}
  other: {type: salesforce, access_token_env: SF_TOKEN}
campaigns:
  camp_9:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: update
      fields:
        - {from: referrer.first_name, to: name}
  camp_10:
    connection: missing
    referrers:
      action: create_everything
      on_duplicate: merge
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.id, to: external_id}
`
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	err = f.Validate()
	if err == nil {
		t.Fatal("validate: got nil, want problems")
	}
	for _, want := range []string{
		"log.level:",
		"nats.workers:",
		"nats.ack_wait:",
		"http.listen:",
		"retry.initial_delay:",
		"connections.other.type:",
		"connections.main.region:",
		"connections.main.access_token_env:",
		"connections.main.api_version:",
		"campaigns.camp_9.referrers.fields: email is not mapped",
		"campaigns.camp_10.connection:",
		"campaigns.camp_10.referrers.action:",
		"campaigns.camp_10.referrers.on_duplicate:",
	} {
		t.Run(want, func(t *testing.T) {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("got:\n%v\nwant a line with %q", err, want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown key", "nats: {ulr: x}", "field ulr not found"},
		{"bad duration", "nats: {ack_wait: soon}", "not a duration"},
		{"wrong type", "nats: {workers: many}", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDefaultCampaign(t *testing.T) {
	tests := []struct {
		name    string
		extra   string
		wantDef bool
	}{
		{"absent", "", false},
		{"empty means none", "default_campaign: {}", false},
		{"set", "default_campaign: {connection: main, referrers: {action: create_lead, on_duplicate: skip, fields: [{from: referrer.email, to: email}, {from: referrer.url, to: custom_attributes.referral_link}]}}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse([]byte(valid + tt.extra))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Validate(); err != nil {
				t.Fatal(err)
			}
			_, ok := f.Catalog().Lookup("unlisted")
			if ok != tt.wantDef {
				t.Errorf("unlisted campaign configured: got %v, want %v", ok, tt.wantDef)
			}
		})
	}
}

func TestWarningForUnmappedReferralLink(t *testing.T) {
	f, err := config.Parse([]byte(strings.Replace(valid, "        - {from: referrer.url, to: custom_attributes.referral_link}\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	w := f.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "campaigns.camp_123") || !strings.Contains(w[0], "referral link") {
		t.Errorf("got %q, want one warning about camp_123's referral link", w)
	}
}

func TestTokenComesFromTheEnvironment(t *testing.T) {
	c := config.Connection{AccessTokenEnv: "RS_TEST_TOKEN"}
	t.Setenv("RS_TEST_TOKEN", "")
	if _, err := c.Token(); err == nil || !strings.Contains(err.Error(), "RS_TEST_TOKEN") {
		t.Errorf("empty: got %v, want an error naming the variable", err)
	}
	t.Setenv("RS_TEST_TOKEN", " secret ")
	if got, err := c.Token(); err != nil || got != "secret" {
		t.Errorf("got %q, %v; want secret", got, err)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	t.Setenv("NATS_URL", "")
	f, err := config.Load(filepath.Join("..", "..", "deployments", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("deployments/config.example.yaml: %v", err)
	}
	if _, err := os.Stat(filepath.Join("..", "..", "deployments", "config.example.yaml")); err != nil {
		t.Fatal(err)
	}
}

// TestLedgerInvariants: the relations the exactly-once protocol relies on
// are checked, each with its path and a way out.
func TestLedgerInvariants(t *testing.T) {
	t.Setenv("NATS_URL", "")
	base := strings.Replace(valid, "  ack_wait: 30s\n", "", 1)
	tests := []struct {
		name string
		add  string // appended to the valid document's nats/ledger settings
		want []string
	}{
		{name: "defaults", want: nil},
		{name: "a lease that fits the delivery budget", add: "ledger: {lease: 20s}\n", want: nil},
		{name: "a lease longer than the delivery budget", add: "ledger: {lease: 27s}\n",
			want: []string{"ledger.lease: 27s leaves no time to record a create's result within a delivery's budget (90% of nats.ack_wait 30s = 27s)"}},
		{name: "the default lease with a short ack wait", add: "nats_ack_wait: 5s\n", want: nil},
		{name: "an explicit lease with a short ack wait", add: "nats_ack_wait: 5s\nledger: {lease: 10s}\n",
			want: []string{"ledger.lease: 10s leaves no time to record a create's result within a delivery's budget (90% of nats.ack_wait 5s = 4.5s)"}},
		{name: "a lease under a second", add: "ledger: {lease: 500ms}\n", want: []string{"ledger.lease: 500ms is shorter than 1s"}},
		{name: "a negative lease and ttl", add: "ledger: {lease: -1s, ttl: -1h}\n",
			want: []string{"ledger.lease: must not be negative", "ledger.ttl: must not be negative"}},
		{name: "a ttl under an hour", add: "ledger: {ttl: 10m}\n", want: []string{"ledger.ttl: 10m0s is shorter than 1h"}},
		{name: "a ttl shorter than the streams keep messages", add: "ledger: {ttl: 48h}\nnats_max_age: 72h\n",
			want: []string{"ledger.ttl: 48h0m0s is shorter than nats.stream_max_age (72h0m0s)", "ledger.ttl: 48h0m0s is shorter than nats.dead_letter_max_age (72h0m0s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := base
			add := tt.add
			if strings.Contains(add, "nats_ack_wait: 5s\n") {
				doc = strings.Replace(doc, "  workers: 8\n", "  workers: 8\n  ack_wait: 5s\n", 1)
				add = strings.Replace(add, "nats_ack_wait: 5s\n", "", 1)
			}
			if strings.Contains(add, "nats_max_age: 72h\n") {
				doc = strings.Replace(doc, "  workers: 8\n", "  workers: 8\n  stream_max_age: 72h\n  dead_letter_max_age: 72h\n", 1)
				add = strings.Replace(add, "nats_max_age: 72h\n", "", 1)
			}
			f, err := config.Parse([]byte(doc + add))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			err = f.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("validate: got %v, want no problem", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate: got no problem, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("validate: want %q in\n%v", w, err)
				}
			}
		})
	}
}

// TestUnknownKeysWithOtherProblems: an unknown key does not hide the other
// problems of the file; Parse reports the key and returns the rest read.
func TestUnknownKeysWithOtherProblems(t *testing.T) {
	t.Setenv("NATS_URL", "")
	doc := strings.Replace(valid, "  workers: 8\n", "  workers: 8\n  wokers: 3\n", 1) + "ledger: {lease: -1s}\n"
	f, err := config.Parse([]byte(doc))
	var keys *config.KeyError
	if !errors.As(err, &keys) || f == nil {
		t.Fatalf("Parse: got %v, %v; want a KeyError and the file", f, err)
	}
	if len(keys.Problems) != 1 || !strings.Contains(keys.Problems[0], "wokers") {
		t.Errorf("key problems: got %q, want the unknown key named", keys.Problems)
	}
	if verr := f.Validate(); verr == nil || !strings.Contains(verr.Error(), "ledger.lease: must not be negative") {
		t.Errorf("Validate: got %v, want the lease problem reported too", verr)
	}
	if f.NATS.Workers != 8 {
		t.Errorf("workers: got %d, want the rest of the file read (8)", f.NATS.Workers)
	}
}
