package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
)

// autumnCampaign is a campaign the running configuration lacks.
const autumnCampaign = `  autumn:
    connection: main
    referrers:
      action: create_user
      on_duplicate: skip
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.url, to: custom_attributes.referral_link}
`

// signalOnly turns polling off in practice, so that only signals reload.
func signalOnly(doc string) string {
	return strings.Replace(doc, "reload: {poll_interval: 200ms}", "reload: {poll_interval: 1h}", 1)
}

// reloadState reads the reload metrics from /metrics.
func reloadState(t *testing.T, oi *opsInstance) (generation, success, failure float64, hash string) {
	t.Helper()
	mfs := opsScrape(t, oi.in.addr())
	generation, _ = metricValue(mfs, "referrer_sync_config_generation", nil)
	success, _ = metricValue(mfs, "referrer_sync_config_reloads_total", map[string]string{"result": "success"})
	failure, _ = metricValue(mfs, "referrer_sync_config_reloads_total", map[string]string{"result": "failure"})
	for _, m := range mfs["referrer_sync_config_info"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "sha256" {
				hash = lp.GetValue()
			}
		}
	}
	return generation, success, failure, hash
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return contentHash(b)[:12]
}

// TestReloadOnSignal: SIGHUP applies a new campaign to the next event;
// changes outside the campaigns are reported as needing a restart and
// ignored.
func TestReloadOnSignal(t *testing.T) {
	env := newOpsEnv(t, emulator.Config{})
	oi := env.startOps(t, signalOnly(env.doc("")), false)
	if gen, ok, fail, hash := reloadState(t, oi); gen != 1 || ok != 0 || fail != 0 || hash != fileHash(t, oi.path) {
		t.Fatalf("at start: got generation %v, reloads %v/%v, hash %q; want 1, 0/0, the file's %q", gen, ok, fail, hash, fileHash(t, oi.path))
	}

	env.publish(event("before", "autumn", "usr_1", "Ada", "ada@example.com"), "")
	if got := oi.settled(1)[0]; got.Outcome != domain.OutcomeUnconfigured {
		t.Fatalf("before the reload: got %s, want unconfigured", got.Outcome)
	}

	next := strings.Replace(signalOnly(env.doc(autumnCampaign)), "workers: 4", "workers: 6", 1)
	oi.rewrite(next)
	oi.sighup()
	opsWait(t, 5*time.Second, "generation 2", func() bool { gen, _, _, _ := reloadState(t, oi); return gen == 2 })
	gen, ok, fail, hash := reloadState(t, oi)
	if gen != 2 || ok != 1 || fail != 0 || hash != fileHash(t, oi.path) {
		t.Errorf("after: got generation %v, reloads %v/%v, hash %q; want 2, 1/0, %q", gen, ok, fail, hash, fileHash(t, oi.path))
	}

	env.publish(event("after", "autumn", "usr_2", "Grace", "grace@example.com"), "")
	if got := oi.settled(2)[1]; got.Outcome != domain.OutcomeCreated || got.Campaign != "autumn" {
		t.Errorf("after the reload: got %s for %s (%v), want created for autumn", got.Outcome, got.Campaign, got.Err)
	}

	logs := logRecords(t, oi.logs.String())
	if rs := withMsg(logs, "configuration reloaded"); len(rs) != 1 || rs[0].str("cause") != "signal hangup" {
		t.Errorf("got reload log lines %v, want one caused by the signal", rs)
	}
	restart := withMsg(logs, "configuration changes outside campaigns")
	if len(restart) != 1 || !slices.Equal(toStrings(restart[0]["sections"]), []string{"nats"}) {
		t.Errorf("got restart warnings %v, want one naming [nats]", restart)
	}
	if oi.in.consCfg.Workers != 4 {
		t.Errorf("workers: got %d, want 4 (a restart setting)", oi.in.consCfg.Workers)
	}
}

func toStrings(v any) []string {
	var out []string
	if vs, ok := v.([]any); ok {
		for _, x := range vs {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

// TestReloadRejectsInvalidFiles: a file with problems is rejected as a
// whole, every problem is logged in one line, the failure is counted, and
// the settings in force keep working.
func TestReloadRejectsInvalidFiles(t *testing.T) {
	env := newOpsEnv(t, emulator.Config{})
	valid := signalOnly(env.doc(""))
	oi := env.startOps(t, valid, false)
	tests := []struct {
		name         string
		doc          string
		wantProblems []string
	}{
		{
			name: "invalid campaigns",
			doc: valid + autumnCampaign + `  broken:
    connection: main
    referrers:
      action: create_everything
      on_duplicate: merge
      fields:
        - {from: referrer.first_name, to: name}
`,
			wantProblems: []string{
				`campaigns.broken.referrers.action: "create_everything" is not one of nothing, create_lead, create_user`,
				`campaigns.broken.referrers.on_duplicate: "merge" is not one of skip, update`,
				"campaigns.broken.referrers.fields: email is not mapped",
			},
		},
		//nolint:misspell // the misspelled key is the case: an unknown key
		{name: "unknown key", doc: valid + "  autumn:\n    conection: main\n", wantProblems: []string{"field conection not found"}},
		{
			name: "connection this process does not run",
			doc: strings.Replace(valid, "connections:\n", "connections:\n  second: {type: intercom, base_url: \"http://127.0.0.1:1\", access_token_env: "+testTokenEnv+"}\n", 1) +
				strings.Replace(autumnCampaign, "connection: main", "connection: second", 1),
			wantProblems: []string{`campaigns.autumn.connection: "second" is not a connection this process runs`},
		},
		{name: "unreadable", doc: "", wantProblems: []string{"no such file or directory"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.doc == "" {
				if err := os.Remove(oi.path); err != nil {
					t.Fatal(err)
				}
			} else {
				oi.rewrite(tt.doc)
			}
			oi.sighup()
			want := float64(i + 1)
			opsWait(t, 5*time.Second, "the failure counted", func() bool { _, _, fail, _ := reloadState(t, oi); return fail == want })
			if gen, ok, _, _ := reloadState(t, oi); gen != 1 || ok != 0 {
				t.Errorf("got generation %v and %v successes, want 1 and 0", gen, ok)
			}
			rejected := withMsg(logRecords(t, oi.logs.String()), "configuration reload rejected")
			if len(rejected) != i+1 {
				t.Fatalf("got %d rejection lines, want %d", len(rejected), i+1)
			}
			last := rejected[i]
			if last["level"] != "ERROR" {
				t.Errorf("level: got %v, want ERROR", last["level"])
			}
			problems := toStrings(last["problems"])
			for _, w := range tt.wantProblems {
				if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("problems %q lack %q", problems, w)
				}
			}
			// The old settings keep working: a configured campaign
			// applies, the rejected one does not exist.
			id := "ok-" + tt.name
			env.publish(event(id, "users_update", "usr_"+tt.name, "Ada", strings.ReplaceAll(tt.name, " ", ".")+"@example.com"), "")
			env.publish(event("rejected-"+tt.name, "autumn", "usr_9", "Bob", "bob@example.com"), "")
			vs := oi.settled(2 * (i + 1))
			got := map[string]domain.Outcome{}
			for _, v := range vs {
				got[v.EventID] = v.Outcome
			}
			if got[id] != domain.OutcomeCreated || got["rejected-"+tt.name] != domain.OutcomeUnconfigured {
				t.Errorf("after the rejection: got %s and %s, want created (old settings) and unconfigured (new ones not applied)",
					got[id], got["rejected-"+tt.name])
			}
		})
	}
}

// TestReloadOnFileChange: a change to the file is picked up by polling,
// without a signal, including Kubernetes' way of updating a mounted
// ConfigMap: the file is a symlink through "..data", which is swapped to a
// new directory in one rename.
func TestReloadOnFileChange(t *testing.T) {
	env := newOpsEnv(t, emulator.Config{})
	dir := t.TempDir()
	writeVersion := func(name, doc string) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "config.yaml"), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("v1", env.doc(""))
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	oi := env.startOpsAt(t, path, false)

	time.Sleep(500 * time.Millisecond) // a few polls of an unchanged file
	if gen, ok, fail, _ := reloadState(t, oi); gen != 1 || ok != 0 || fail != 0 {
		t.Fatalf("unchanged file: got generation %v, reloads %v/%v, want 1, 0/0", gen, ok, fail)
	}

	writeVersion("v2", env.doc(autumnCampaign))
	opsWait(t, 5*time.Second, "the change picked up", func() bool { gen, _, _, _ := reloadState(t, oi); return gen == 2 })
	if _, _, _, hash := reloadState(t, oi); hash != fileHash(t, path) {
		t.Errorf("config_info hash: got %q, want %q", hash, fileHash(t, path))
	}
	env.publish(event("polled", "autumn", "usr_1", "Ada", "ada@example.com"), "")
	if got := oi.settled(1)[0]; got.Outcome != domain.OutcomeCreated {
		t.Errorf("got %s (%v), want created under the new settings", got.Outcome, got.Err)
	}
	if rs := withMsg(logRecords(t, oi.logs.String()), "configuration reloaded"); len(rs) != 1 || rs[0].str("cause") != "file changed" {
		t.Errorf("got reload log lines %v, want one caused by the file change", rs)
	}
}
