package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

func ledgerCmd(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"ledger"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// TestLedgerShow reads back what the service recorded, by event and by
// email, and refuses ambiguous or incomplete requests.
func TestLedgerShow(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	cfg := h.dlqConfig(t, "")
	h.publish(event("ls-1", "leads_update", "u1", "Ada", "Ada@Example.com"), "")
	h.publish(event("ls-2", "leads_update", "u1", "Ada", "ada@example.com"), "")
	vs := h.settled(2)
	contact := vs[0].ContactID
	if contact == "" {
		t.Fatalf("no contact created: %+v", vs)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		want     []string
		dontWant []string
	}{
		{name: "by event", args: []string{"show", "--config", cfg, "--event", "ls-2"}, code: 0,
			want: []string{"connection main, email not stored", "contact     " + contact, "ls-1", "created", "ls-2", "updated"}},
		{name: "by email, normalised", args: []string{"show", "--config", cfg, "--email", " ADA@example.com", "--connection", "main"}, code: 0,
			want: []string{"key p.", "contact     " + contact, "ls-1", "ls-2"}, dontWant: []string{"ada@example.com"}},
		{name: "json", args: []string{"show", "--config", cfg, "--event", "ls-1", "--json"}, code: 0,
			want: []string{`"ContactID": "` + contact + `"`, `"Outcome": "created"`}},
		{name: "unknown event", args: []string{"show", "--config", cfg, "--event", "nope"}, code: 0,
			want: []string{"the ledger holds nothing for it"}},
		{name: "another connection", args: []string{"show", "--config", cfg, "--email", "ada@example.com", "--connection", "other"}, code: 0,
			want: []string{"the ledger holds nothing for it"}},
		{name: "both selectors", args: []string{"show", "--config", cfg, "--event", "ls-1", "--email", "a@b.c", "--connection", "main"}, code: 2},
		{name: "email without connection", args: []string{"show", "--config", cfg, "--email", "ada@example.com"}, code: 2},
		{name: "no subcommand", args: nil, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := ledgerCmd(tt.args...)
			if code != tt.code {
				t.Fatalf("exit code: got %d, want %d (stdout %q, stderr %q)", code, tt.code, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.dontWant {
				if strings.Contains(out, w) {
					t.Errorf("output contains %q:\n%s", w, out)
				}
			}
		})
	}
}
