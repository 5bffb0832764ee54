package conformance

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/ports"
)

// DeadLettersHarness is one ports.DeadLetters under test with the hooks the
// scenarios need. Every field is required unless its comment says
// otherwise.
type DeadLettersHarness struct {
	// DeadLetters is the implementation under test, on an empty store.
	DeadLetters ports.DeadLetters
	// Stored reads back every dead letter the store holds, oldest first,
	// as an operator's reader would.
	Stored func(t *testing.T) []ports.DeadLetter
	// Break makes the store unable to take anything from now on (its
	// stream deleted, its disk full).
	Break func()
	// DedupBySequence is declared when a repeat of one message's dead
	// letter (the same Subject and Sequence) is stored once. When it is
	// not, a repeat may be stored twice, and readers take both as one.
	DedupBySequence bool
}

type deadLetterScenario struct {
	name string
	run  func(t *testing.T, h DeadLettersHarness)
}

// DeadLetters runs the ports.DeadLetters contract against the
// implementation newDL returns; each call must return a harness on an
// empty store. One harness is made first to read what it declares, which
// names the scenarios.
func DeadLetters(t *testing.T, newDL func(t *testing.T) DeadLettersHarness) {
	t.Helper()
	dedup := newDL(t).DedupBySequence
	at := time.Date(2026, 9, 1, 12, 0, 0, 123456789, time.UTC)
	full := func(seq uint64) ports.DeadLetter {
		return ports.DeadLetter{
			Body: fmt.Appendf(nil, `{"id":"evt-%d","type":"referrer.joined"}`, seq),
			Headers: map[string][]string{
				"ce-specversion": {"1.0"},
				"Ce-Id":          {fmt.Sprintf("evt-%d", seq)},
				"X-Trace-Id":     {"first", "second", "first"},
				"x-trace-id":     {"lower"},
				"X-Empty":        {""},
			},
			Reason:    "crm_rejected",
			Message:   "the CRM refused the contact: unknown attribute",
			Attempts:  3,
			Subject:   "referrer.joined",
			Sequence:  seq,
			EventID:   fmt.Sprintf("evt-%d", seq),
			Campaign:  "camp_lead",
			FirstSeen: at,
			Failed:    at.Add(90 * time.Second),
		}
	}
	scenarios := []deadLetterScenario{
		{"a nil error means stored: the dead letter reads back whole (body, headers with their case and every value, account, times)", func(t *testing.T, h DeadLettersHarness) {
			want := []ports.DeadLetter{full(7), full(8)}
			for _, d := range want {
				if err := h.DeadLetters.DeadLetter(t.Context(), d); err != nil {
					t.Fatalf("DeadLetter(%d): %v", d.Sequence, err)
				}
			}
			got := h.Stored(t)
			if len(got) != len(want) {
				t.Fatalf("stored %d dead letters, want %d", len(got), len(want))
			}
			for i := range want {
				if d := diffLetter(got[i], want[i]); d != "" {
					t.Errorf("dead letter %d: %s", i, d)
				}
			}
		}},
		{"a sparse dead letter (no headers, no stream sequence, empty body) is stored", func(t *testing.T, h DeadLettersHarness) {
			d := ports.DeadLetter{Reason: "malformed", Message: "not JSON", Attempts: 1, Subject: "referrer.joined", Failed: at}
			if err := h.DeadLetters.DeadLetter(t.Context(), d); err != nil {
				t.Fatalf("DeadLetter: %v", err)
			}
			got := h.Stored(t)
			if len(got) != 1 {
				t.Fatalf("stored %d dead letters, want 1", len(got))
			}
			g := got[0]
			if len(g.Body) != 0 || len(g.Headers) != 0 || g.Reason != d.Reason || g.Message != d.Message || g.Attempts != 1 ||
				g.Subject != d.Subject || g.Sequence != 0 || !g.Failed.Equal(at) {
				t.Errorf("read back %+v, want %+v", g, d)
			}
		}},
		{"a store that cannot take the dead letter answers an error, never nil", func(t *testing.T, h DeadLettersHarness) {
			h.Break()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if err := h.DeadLetters.DeadLetter(ctx, full(7)); err == nil {
				t.Fatal("DeadLetter into a broken store: nil, want an error (nil would let the original be acknowledged and lost)")
			}
		}},
		{"a cancelled context answers an error, never nil", func(t *testing.T, h DeadLettersHarness) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := h.DeadLetters.DeadLetter(ctx, full(7)); err == nil {
				t.Fatal("DeadLetter with a cancelled context: nil, want an error")
			}
		}},
		{"concurrent dead letters are each stored", func(t *testing.T, h DeadLettersHarness) {
			const n = 16
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range uint64(n) {
				wg.Go(func() { errs[i] = h.DeadLetters.DeadLetter(t.Context(), full(100+i)) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("DeadLetter %d: %v", i, err)
				}
			}
			var seqs []uint64
			for _, d := range h.Stored(t) {
				seqs = append(seqs, d.Sequence)
			}
			slices.Sort(seqs)
			want := make([]uint64, n)
			for i := range want {
				want[i] = uint64(100 + i)
			}
			if !slices.Equal(seqs, want) {
				t.Errorf("stored sequences %v, want %v", seqs, want)
			}
		}},
		{repeatName(dedup), func(t *testing.T, h DeadLettersHarness) {
			for range 2 {
				if err := h.DeadLetters.DeadLetter(t.Context(), full(7)); err != nil {
					t.Fatalf("DeadLetter: %v", err)
				}
			}
			got := h.Stored(t)
			switch {
			case h.DedupBySequence && len(got) != 1:
				t.Errorf("stored %d dead letters, want 1", len(got))
			case len(got) < 1 || len(got) > 2:
				t.Errorf("stored %d dead letters, want 1 or 2", len(got))
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, newDL(t)) })
	}
}

func repeatName(dedup bool) string {
	if dedup {
		return "a repeat of one message's dead letter (same subject and sequence) succeeds and is stored once"
	}
	return "a repeat of one message's dead letter succeeds and is stored (once or twice: the store does not deduplicate)"
}

// diffLetter describes how two dead letters differ, "" when they agree
// (times as instants).
func diffLetter(got, want ports.DeadLetter) string {
	var d []string
	if string(got.Body) != string(want.Body) {
		d = append(d, fmt.Sprintf("body %q, want %q", got.Body, want.Body))
	}
	if !maps.EqualFunc(got.Headers, want.Headers, slices.Equal) {
		d = append(d, fmt.Sprintf("headers %q, want %q", got.Headers, want.Headers))
	}
	g, w := got, want
	g.Body, g.Headers, w.Body, w.Headers = nil, nil, nil, nil
	if !g.FirstSeen.Equal(w.FirstSeen) || !g.Failed.Equal(w.Failed) {
		d = append(d, fmt.Sprintf("times %s, %s; want %s, %s", g.FirstSeen, g.Failed, w.FirstSeen, w.Failed))
	}
	g.FirstSeen, g.Failed, w.FirstSeen, w.Failed = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
		d = append(d, fmt.Sprintf("account %+v, want %+v", g, w))
	}
	return strings.Join(d, "; ")
}
