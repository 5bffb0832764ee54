package hubspot

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports/conformance"
)

// emuOps are the emulator operations behind each call of the port.
var emuOps = map[conformance.Op][]string{
	conformance.OpFind:   {emulator.OpGetContact, emulator.OpSearchContacts},
	conformance.OpCreate: {emulator.OpCreateContact},
	conformance.OpUpdate: {emulator.OpUpdateContact},
}

// TestConformance runs the CRM port's contract against the client and the
// emulator, with an external id property configured.
func TestConformance(t *testing.T) {
	conformance.CRM(t, func(t *testing.T) conformance.CRMHarness {
		const lag = 30 * time.Second
		e := newEmu(t, func(c *emulator.Config) { c.SearchLag = lag })
		mod := func(c *Config) {
			c.ExternalIDProperty = "member_id"
			// Below the 10-second interval, so that a spent interval is
			// reported rather than waited out.
			c.MaxRateLimitWait = time.Second
		}
		cl := e.client(emuToken, mod)
		var faults emulator.Faults
		set := func(f emulator.Faults) {
			if err := e.emu.SetFaults(f); err != nil {
				t.Fatalf("SetFaults: %v", err)
			}
		}
		return conformance.CRMHarness{
			CRM:       cl,
			Refused:   e.client("pat-na1-refused_0000", mod),
			Caps:      conformance.CRMCaps{UniqueEmail: true, ExternalIDs: true, Paces: true},
			SearchLag: lag,
			Now:       time.Now, // the client judges deadlines by the wall clock
			Advance:   e.clock.Add,
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
				// Another client of the account spends the interval.
				set(emulator.Faults{RateLimitBurstRate: 1, Operations: []string{emulator.OpGetContact}})
				defer set(faults)
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/crm/v3/objects/contacts/1", nil)
				req.Header.Set("Authorization", "Bearer "+emuToken)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("spend the interval: %v", err)
				}
				_ = res.Body.Close() // only the status matters
				if res.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("spend the interval: HTTP %d, want 429", res.StatusCode)
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
				for _, c := range e.emu.Contacts(emuToken) {
					if !strings.EqualFold(c.Properties[propEmail], email) {
						continue
					}
					m := domain.Match{ID: c.ID, Role: domain.RoleLead, Email: c.Properties[propEmail],
						ExternalID: c.Properties["member_id"], CreatedAt: c.CreatedAt.Unix(), Marker: c.Properties[DefaultMarkerProperty]}
					if c.Properties[propLifecycleStage] == DefaultUserStage {
						m.Role = domain.RoleUser
					}
					out = append(out, m)
				}
				return out
			},
			Custom: func(id string) map[string]string {
				for _, c := range e.emu.Contacts(emuToken) {
					if c.ID == id {
						return c.Properties
					}
				}
				return nil
			},
			KnownField:   "referral_link",
			UnknownField: "no_such_property",
			CheckFields:  cl.CheckProperties,
		}
	})
}
