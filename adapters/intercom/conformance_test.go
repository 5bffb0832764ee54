package intercom

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/conformance"
)

// emuOps are the emulator operations behind each call of the port.
var emuOps = map[conformance.Op][]string{
	conformance.OpFind:   {emulator.OpSearchContacts, emulator.OpShowContactByExternalID, emulator.OpShowContact},
	conformance.OpCreate: {emulator.OpCreateContact},
	conformance.OpUpdate: {emulator.OpUpdateContact},
}

// TestConformance runs the CRM port's contract against the client and the
// emulator, with every request checked against Intercom's OpenAPI
// description.
func TestConformance(t *testing.T) {
	conformance.CRM(t, func(t *testing.T) conformance.CRMHarness {
		const lag = time.Minute
		e := newEmuEnv(t, func(c *emulator.Config) { c.SearchLag = lag })
		mod := func(c *Config) {
			c.MarkerAttribute = testMarker
			// Below the 10-second window, so that a spent window is
			// reported rather than waited out.
			c.MaxRateLimitWait = time.Second
		}
		cl := e.client(t, emuToken, mod)
		var faults emulator.Faults
		set := func(f emulator.Faults) {
			if err := e.emu.SetFaults(f); err != nil {
				t.Fatalf("SetFaults: %v", err)
			}
		}
		return conformance.CRMHarness{
			CRM:       cl,
			Refused:   e.client(t, "emu-tok_refused_000000", mod),
			Caps:      conformance.CRMCaps{UniqueEmail: false, ExternalIDs: true, Paces: true},
			SearchLag: lag,
			Now:       time.Now, // the client judges deadlines by the wall clock
			Advance: func(d time.Duration) {
				if err := e.clock.Sleep(context.Background(), d); err != nil {
					t.Errorf("advance the clock: %v", err)
				}
			},
			Inject: func(op conformance.Op, f conformance.Fault) {
				switch f {
				case conformance.ServerError:
					faults.ServerErrorRate = 1
				case conformance.LostResponse:
					faults.LostResponseRate = 1
				case conformance.Stall:
					faults.TimeoutRate = 1
				}
				faults.Operations = append(faults.Operations, emuOps[op]...)
				set(faults)
			},
			Clear: func() {
				faults = emulator.Faults{}
				set(faults)
			},
			SpendBudget: func() {
				// Another client of the workspace spends the window.
				set(emulator.Faults{RateLimitBurstRate: 1, Operations: []string{emulator.OpIdentifyAdmin}})
				defer set(faults)
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/me", nil)
				req.Header.Set("Authorization", "Bearer "+emuToken)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("spend the window: %v", err)
				}
				_ = res.Body.Close() // only the status matters
				if res.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("spend the window: HTTP %d, want 429", res.StatusCode)
				}
			},
			Delete: func(id string) {
				if !e.emu.Delete(emuToken, id) {
					t.Fatalf("delete %s: no such contact", id)
				}
			},
			Requests: func() int { return len(e.emu.Requests()) },
			Stored: func(email string) []domain.Match {
				var out []domain.Match
				for _, c := range e.contacts(emuToken) {
					if !strings.EqualFold(c.Email, email) {
						continue
					}
					m := domain.Match{ID: c.ID, Role: domain.Role(c.Role), Email: c.Email, ExternalID: c.ExternalID, CreatedAt: c.CreatedAt.Unix()}
					if v, ok := c.CustomAttributes[testMarker].(string); ok {
						m.Marker = v
					}
					out = append(out, m)
				}
				return out
			},
			Custom: func(id string) map[string]string {
				out := map[string]string{}
				if c, ok := byID(e.contacts(emuToken), id); ok {
					for k, v := range c.CustomAttributes {
						out[k] = fmt.Sprint(v)
					}
				}
				return out
			},
			KnownField:   "referral_link",
			UnknownField: "no_such_attribute",
			CheckFields: func(ctx context.Context, names []string) error {
				return checkAttributes(ctx, cl, names)
			},
		}
	})
}

// checkAttributes is the start-up check of mapped custom attributes as
// the service makes it today, from Attributes: the Intercom adapter has no
// check of its own yet (the command lists the attributes and warns).
func checkAttributes(ctx context.Context, c *Client, names []string) error {
	attrs, err := c.Attributes(ctx)
	if err != nil {
		return err
	}
	var missing []string
	for _, n := range names {
		if !slices.ContainsFunc(attrs, func(a Attribute) bool { return a.Custom && a.Name == n && !a.Archived }) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &ports.Error{Op: OpListAttributes, Kind: ports.Permanent,
		Message: fmt.Sprintf("missing custom data attributes: %s", strings.Join(missing, ", "))}
}
