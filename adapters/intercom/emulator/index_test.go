package emulator_test

import (
	"testing"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

// TestSearchEmailIndex checks the cases where an index on email could give
// a different answer from a scan: case variants (including the Kelvin sign
// and the long s, which fold to k and s although the long s is not
// lower-cased to s), an email changed by an update, and queries that are
// not a single "email =" comparison and must still see everything.
func TestSearchEmailIndex(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	kay := e.create(map[string]any{"role": "lead", "email": "kay@example.com"})
	kelvin := e.create(map[string]any{"role": "lead", "email": "\u212Aay@EXAMPLE.com"}) // KELVIN SIGN
	moved := e.create(map[string]any{"role": "lead", "email": "old@example.com"})
	e.must(200, "PUT", "/contacts/"+moved, map[string]any{"email": "Kay@example.com"})
	other := e.create(map[string]any{"role": "lead", "email": "other@example.com"})
	sam := e.create(map[string]any{"role": "lead", "email": "sam@example.com"})
	longS := e.create(map[string]any{"role": "lead", "email": "\u017Fam@example.com"}) // LATIN SMALL LETTER LONG S

	tests := []struct {
		name string
		q    any
		want []string
	}{
		{"every case variant", filter("email", "=", "KAY@example.COM"), []string{kay, kelvin, moved}},
		{"the Kelvin sign finds k", filter("email", "=", "\u212Aay@example.com"), []string{kay, kelvin, moved}},
		{"the long s and s", filter("email", "=", "SAM@example.com"), []string{sam, longS}},
		{"the old email of an update", filter("email", "=", "old@example.com"), nil},
		{"an email nobody has", filter("email", "=", "nobody@example.com"), nil},
		{"a group is scanned", group("OR", filter("email", "=", "other@example.com")), []string{other}},
		{"another operator is scanned", filter("email", "~", "other"), []string{other}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := e.search(map[string]any{"query": tt.q})
			if !equalIDs(got, tt.want) {
				t.Errorf("ids = %v, want %v", got, tt.want)
			}
		})
	}
}
