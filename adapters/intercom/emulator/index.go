package emulator

import (
	"slices"
	"strings"
	"unicode"
)

// The email index makes the search the adapter sends for every event,
// email = X, cost the matches rather than every contact of the workspace.
// A scan made benchmarks of tens of thousands of creates measure the
// emulator (quadratic, under its one lock) instead of the client; Intercom's
// own search is indexed.

// foldKey maps s to one representative of its case-folding class: two
// strings have the same key exactly when strings.EqualFold says they are
// equal, which is how search compares emails.
func foldKey(s string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, s)
}

// indexEmail and unindexEmail keep ws.byEmail, every contact (lead or user)
// by the fold key of its email. The caller holds Server.mu.
func (ws *workspace) indexEmail(c *Contact) {
	if c.Email != "" {
		k := foldKey(c.Email)
		ws.byEmail[k] = append(ws.byEmail[k], c)
	}
}

func (ws *workspace) unindexEmail(c *Contact) {
	if c.Email == "" {
		return
	}
	k := foldKey(c.Email)
	list := slices.DeleteFunc(ws.byEmail[k], func(o *Contact) bool { return o == c })
	if len(list) == 0 {
		delete(ws.byEmail, k)
		return
	}
	ws.byEmail[k] = list
}

// candidates returns the contacts a search must look at: for a query that
// is one "email = value" comparison, those with that email; otherwise all
// of them. Either way the query is still matched against each, so the
// index only narrows the scan and never changes an answer.
func (ws *workspace) candidates(root *filter) []*Contact {
	if root.op == "" && root.field == "email" && root.operator == "=" && len(root.values) == 1 {
		if v, ok := root.values[0].(string); ok {
			return ws.byEmail[foldKey(v)]
		}
	}
	return ws.contacts
}
