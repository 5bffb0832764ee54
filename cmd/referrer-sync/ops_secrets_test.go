package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

// TestSecretsNeverLeak runs the service through start-up, successes and
// failures with a recognisable token and recognisable people, and searches
// everything an operator or a log pipeline sees — every log line at debug
// level, /metrics, /readyz, /healthz, start-up errors, verdict errors, and
// the connection configuration's formatted forms — for the token and for
// the people's emails and names.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		token      = "tok_LEAKCHECK_5f2d9a7c31e4b8"
		wrongToken = "tok_WRONGLEAK_0c6e1f9b2a7d"
	)
	people := []struct{ name, email string }{
		{"Zebulonia", "zebulonia.quux@leakcheck.example"},
		{"Xanthippe", "xanthippe.vorb@leakcheck.example"},
		{"Quillonar", "quillonar.mmm@leakcheck.example"},
		{"Ysoldewyn", "ysoldewyn(at)leakcheck.example"}, // invalid email
	}
	env := newOpsEnv(t, emulator.Config{
		Tokens: map[string]emulator.Workspace{token: {ID: "leak", Attributes: []string{"referral_link", "lead_source", "company"}}},
	})
	var seen []string // everything collected, labelled
	collect := func(what, s string) { seen = append(seen, what+":\n"+s) }

	doc := env.doc(`  bad_attr:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: skip
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.not_in_workspace}
`)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("start-up refusal", func(t *testing.T) {
		t.Setenv(testTokenEnv, wrongToken)
		f, _, err := loadConfigHash(path)
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		in, err := start(context.Background(), f, options{logger: newLogger(logs, f.Log)})
		if err == nil {
			in.close()
			t.Fatal("start with a wrong token: got nil error")
		}
		collect("start-up error", fmt.Sprintf("%v\n%+v\n%#v", err, err, err))
		collect("start-up logs", logs.String())
		var code int
		stderr := &syncBuffer{}
		code = run(context.Background(), []string{"run", "--config", path}, &bytes.Buffer{}, stderr)
		if code != 1 {
			t.Errorf("exit code: got %d, want 1", code)
		}
		collect("run stderr", stderr.String())
		if !strings.Contains(stderr.String(), "refused the access token") {
			t.Errorf("stderr %q does not say the token was refused", stderr.String())
		}
	})

	t.Setenv(testTokenEnv, token)
	oi := env.startOpsAt(t, path, false)
	addr := oi.in.addr()
	// created, updated, crm_rejected (400), invalid email, malformed,
	// retried 5xx then created.
	env.publish(event("s1", "leads_update", "usr_1", people[0].name, people[0].email), "")
	oi.settled(1)
	env.publish(event("s2", "users_update", "usr_1", people[0].name, people[0].email), "")
	env.publish(event("s3", "bad_attr", "usr_2", people[1].name, people[1].email), "")
	env.publish(event("s4", "leads_update", "usr_4", people[3].name, people[3].email), "")
	env.publish(`{"specversion":"1.0","id":"s5","data":{"referrer":{"email":"`+people[1].email+`"`, "")
	oi.settled(5)
	if err := env.emu.SetFaults(emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpCreateContact}}); err != nil {
		t.Fatal(err)
	}
	env.publish(event("s6", "users_skip", "usr_3", people[2].name, people[2].email), "")
	opsWait(t, 20*time.Second, "a retry", func() bool {
		for _, v := range oi.allVerdicts() {
			if v.Retry {
				return true
			}
		}
		return false
	})
	if err := env.emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	vs := oi.settled(6)
	outcomes := map[string]domain.Outcome{}
	for _, v := range vs {
		outcomes[v.EventID+"/"+v.Reason] = v.Outcome
	}
	for k, want := range map[string]domain.Outcome{
		"s1/": domain.OutcomeCreated, "s2/": domain.OutcomeUpdated, "s3/crm_rejected": domain.OutcomeDeadLettered,
		"s4/invalid_email": domain.OutcomeDeadLettered, "s6/": domain.OutcomeCreated,
	} {
		if outcomes[k] != want {
			t.Errorf("%s: got %q, want %s (outcomes %v)", k, outcomes[k], want, outcomes)
		}
	}
	for _, v := range oi.allVerdicts() {
		if v.Err != nil {
			collect("verdict error", fmt.Sprintf("%v\n%+v", v.Err, v.Err))
		}
	}
	for _, p := range []string{"/metrics", "/readyz", "/healthz"} {
		_, body := httpGet(t, "http://"+addr+p)
		collect(p, body)
	}
	oi.in.verified.Store(false) // a 503 body lists its reasons
	_, body := httpGet(t, "http://"+addr+"/readyz")
	oi.in.verified.Store(true)
	collect("/readyz 503", body)

	cfg := intercom.Config{Connection: "main", BaseURL: env.emuURL, Token: token}
	var sl bytes.Buffer
	slog.New(slog.NewJSONHandler(&sl, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewTextHandler(&sl, nil)).Info("config", "cfg", cfg)
	collect("intercom.Config", fmt.Sprintf("%v\n%+v\n%#v\n%s\n%s", cfg, cfg, cfg, cfg, sl.String()))
	cl, err := intercom.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	collect("intercom.Client", fmt.Sprintf("%v\n%+v\n%#v", cl, cl, cl))
	bad := intercom.Config{Connection: "main", Token: token + " "}
	collect("intercom.Config.Validate", fmt.Sprint(bad.Validate()))

	if err := oi.stop(); err != nil {
		t.Fatal(err)
	}
	logs := oi.logs.String()
	collect("logs", logs)

	t.Run("nothing secret or personal", func(t *testing.T) {
		// Any 10 characters of a token: a truncated token is a leak too.
		var forbidden []string
		for _, tok := range []string{token, wrongToken} {
			for i := 0; i+10 <= len(tok); i++ {
				forbidden = append(forbidden, tok[i:i+10])
			}
		}
		for _, p := range people {
			forbidden = append(forbidden, p.name, p.email, strings.ToLower(p.email), strings.Split(p.email, "@")[0])
		}
		for _, s := range seen {
			what, _, _ := strings.Cut(s, ":\n")
			for _, f := range forbidden {
				if i := strings.Index(strings.ToLower(s), strings.ToLower(f)); i >= 0 {
					lo, hi := max(0, i-120), min(len(s), i+len(f)+40)
					t.Errorf("%s contains %q: …%s…", what, f, s[lo:hi])
				}
			}
		}
		if len(seen) < 10 || len(logs) < 2000 {
			t.Fatalf("collected %d sources, %d bytes of logs: too little to prove anything", len(seen), len(logs))
		}
	})

	t.Run("one log line per outcome", func(t *testing.T) {
		recs := logRecords(t, logs)
		settled := withMsg(recs, "event settled")
		dead := withMsg(recs, "event dead-lettered")
		if got, want := len(settled)+len(dead), len(vs); got != want {
			t.Errorf("got %d outcome lines (%d settled, %d dead-lettered), want %d", got, len(settled), len(dead), want)
		}
		for _, r := range append(settled, dead...) {
			for _, k := range []string{"event_id", "campaign", "outcome", "attempts"} {
				if _, ok := r[k]; !ok {
					t.Errorf("%q line lacks %s: %v", r.str("msg"), k, r)
				}
			}
		}
		for _, r := range settled {
			if _, ok := r["duration"]; !ok {
				t.Errorf("settled line lacks duration: %v", r)
			}
		}
	})

}
