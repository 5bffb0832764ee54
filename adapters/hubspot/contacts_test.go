package hubspot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

var ctx = context.Background()

func lead(email, marker string) domain.Contact {
	return domain.Contact{Role: domain.RoleLead, Email: email, Name: "Ada King Lovelace", Phone: "+44 20 1234",
		Custom: map[string]any{"referral_link": "https://r.example/ada", "lead_source": "referral"}, Marker: marker}
}

func TestCreateNew(t *testing.T) {
	tests := []struct {
		name      string
		mod       func(*Config)
		contact   domain.Contact
		wantStage string
		wantProps map[string]string
	}{
		{"lead", nil, lead("ada@example.com", "ev-1"), "lead", map[string]string{
			"email": "ada@example.com", "firstname": "Ada King", "lastname": "Lovelace", "phone": "+44 20 1234",
			"referral_link": "https://r.example/ada", "lead_source": "referral", DefaultMarkerProperty: "ev-1"}},
		{"user, default stage", nil, domain.Contact{Role: domain.RoleUser, Email: "u@example.com", Name: "Bob", Marker: "ev-2"}, "customer",
			map[string]string{"firstname": "Bob", DefaultMarkerProperty: "ev-2"}},
		{"user, configured stage", func(c *Config) { c.UserStage = "opportunity" }, domain.Contact{Role: domain.RoleUser, Email: "o@example.com"}, "opportunity", nil},
		{"external id in its unique property", func(c *Config) { c.ExternalIDProperty = "member_id" },
			domain.Contact{Role: domain.RoleUser, Email: "x@example.com", ExternalID: "m-9"}, "customer", map[string]string{"member_id": "m-9"}},
		{"typed custom values as text", nil, domain.Contact{Role: domain.RoleLead, Email: "t@example.com",
			Custom: map[string]any{"referral_link": int64(42), "lead_source": 1.5, "plain_id": true}}, "lead",
			map[string]string{"referral_link": "42", "lead_source": "1.5", "plain_id": "true"}},
		{"v3 paths", func(c *Config) { c.APIVersion = APIVersionV3 }, lead("v3@example.com", ""), "lead", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEmu(t, nil)
			c := e.client(emuToken, tt.mod)
			got, err := c.Create(ctx, tt.contact)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			cs := e.emu.Contacts(emuToken)
			if len(cs) != 1 || got.ID != cs[0].ID || got.Existing {
				t.Fatalf("Create = %+v; contacts %+v", got, cs)
			}
			if s := cs[0].Properties["lifecyclestage"]; s != tt.wantStage {
				t.Errorf("lifecyclestage = %q, want %q", s, tt.wantStage)
			}
			for k, want := range tt.wantProps {
				if v := cs[0].Properties[k]; v != want {
					t.Errorf("%s = %q, want %q", k, v, want)
				}
			}
			wantVersion := DefaultAPIVersion
			if c.cfg.APIVersion == APIVersionV3 {
				wantVersion = "v3"
			}
			if v := e.emu.Requests()[0].Version; v != wantVersion {
				t.Errorf("path version = %q, want %q", v, wantVersion)
			}
		})
	}
}

func TestCreateRefusesWhatHubSpotCannotStore(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, nil)
	yes := true
	tests := []struct {
		name string
		ct   domain.Contact
		want string
	}{
		{"no role", domain.Contact{Email: "a@example.com"}, "role must be"},
		{"external id without its property", domain.Contact{Role: domain.RoleUser, Email: "a@example.com", ExternalID: "x"}, "ExternalIDProperty"},
		{"unmappable fields", domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Avatar: "https://a", SignedUpAt: 1, Unsubscribed: &yes},
			"avatar has no HubSpot contact property; map it to a custom property; signed_up_at"},
		{"lifecyclestage mapped", domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Custom: map[string]any{"lifecyclestage": "customer"}}, `"lifecyclestage" is set by the adapter`},
		{"marker mapped", domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Custom: map[string]any{DefaultMarkerProperty: "x"}}, "is set by the adapter"},
		{"mapped twice", domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Custom: map[string]any{"email": "b@example.com"}}, `"email" is mapped twice`},
		{"unsupported value", domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Custom: map[string]any{"lead_source": []int{1}}}, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Create(ctx, tt.ct)
			pe := portsError(t, err)
			if pe.Kind != ports.Permanent || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Create = %v (kind %v), want Permanent mentioning %q", err, pe.Kind, tt.want)
			}
		})
	}
	if n := len(e.emu.Requests()); n != 0 {
		t.Errorf("%d requests sent; refusals must be decided locally", n)
	}
}

func TestCreateConflictResolvedToExistingID(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, func(c *Config) { c.ExternalIDProperty = "member_id" })
	first, err := c.Create(ctx, lead("ada@example.com", "ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ct   domain.Contact
	}{
		// The documented 409, its id parsed from the message.
		{"same email", lead("ADA@example.com", "ev-2")},
		// A unique-property clash whose message names no id: found by
		// lookup instead.
		{"same external id", domain.Contact{Role: domain.RoleUser, Email: "other@example.com", ExternalID: "m-1"}},
	}
	if err := c.Update(ctx, first.ID, domain.Contact{ExternalID: "m-1"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Create(ctx, tt.ct)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if got != (ports.Created{ID: first.ID, Existing: true}) {
				t.Errorf("Create = %+v, want the existing %s", got, first.ID)
			}
		})
	}
	if n := len(e.emu.Contacts(emuToken)); n != 1 {
		t.Errorf("contacts = %d, want 1", n)
	}
}

func TestLostCreateResolvedWithoutASecondContact(t *testing.T) {
	tests := []struct {
		name   string
		faults emulator.Faults
	}{
		{"response lost after commit", emulator.Faults{LostResponseRate: 1, Operations: []string{emulator.OpCreateContact}}},
		{"timeout after commit", emulator.Faults{TimeoutRate: 1, Operations: []string{emulator.OpCreateContact}}},
		{"5xx", emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpCreateContact}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEmu(t, func(c *emulator.Config) { c.Faults = tt.faults; c.SearchLag = time.Hour })
			c := e.client(emuToken, func(c *Config) { c.Timeout = 300 * time.Millisecond })
			_, err := c.Create(ctx, lead("ada@example.com", "ev-1"))
			pe := portsError(t, err)
			if pe.Kind != ports.Transient || !pe.Uncertain {
				t.Fatalf("Create = %v, want Transient and Uncertain", err)
			}
			if n := len(e.emu.Requests()); n != 1 {
				t.Errorf("create sent %d times, want once: it must not be repeated blindly", n)
			}
			applied := len(e.emu.Contacts(emuToken)) == 1
			if err := e.emu.SetFaults(emulator.Faults{}); err != nil {
				t.Fatal(err)
			}
			// What the application does next: look the person up by email
			// and the marker. The read is consistent, despite the hour of
			// search lag.
			ms, err := c.Find(ctx, domain.Identity{Email: "ada@example.com", Marker: "ev-1"})
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if applied != (len(ms) == 1) {
				t.Fatalf("Find = %+v, applied %v", ms, applied)
			}
			if applied && (ms[0].Marker != "ev-1" || ms[0].Role != domain.RoleLead || ms[0].Email != "ada@example.com") {
				t.Errorf("match = %+v, want the marker ev-1 on a lead", ms[0])
			}
			// Even a repeated create cannot make a second contact, and
			// it is recognised as its own by the marker: not Existing.
			got, err := c.Create(ctx, lead("ada@example.com", "ev-1"))
			if err != nil || got.Existing {
				t.Errorf("repeated Create = %+v, %v; want its own contact, not Existing", got, err)
			}
			// Another event's create for the person finds it existing.
			other, err := c.Create(ctx, lead("ada@example.com", "ev-2"))
			if err != nil || !other.Existing || other.ID != got.ID {
				t.Errorf("other event's Create = %+v, %v; want Existing %s", other, err, got.ID)
			}
			if n := len(e.emu.Contacts(emuToken)); n != 1 {
				t.Errorf("contacts = %d, want 1", n)
			}
		})
	}
}

func TestFind(t *testing.T) {
	e := newEmu(t, func(c *emulator.Config) { c.SearchLag = 30 * time.Second })
	c := e.client(emuToken, func(c *Config) { c.ExternalIDProperty = "member_id" })
	u, err := c.Create(ctx, domain.Contact{Role: domain.RoleUser, Email: "u@example.com", ExternalID: "m-1", Marker: "ev-u"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Create(ctx, lead("l@example.com", "ev-l"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      domain.Identity
		wantIDs []string
	}{
		{"by email, at once", domain.Identity{Email: "u@example.com"}, []string{u.ID}},
		{"by email, other case", domain.Identity{Email: "L@Example.com"}, []string{l.ID}},
		{"by external id", domain.Identity{ExternalID: "m-1"}, []string{u.ID}},
		{"external id and email of the same contact", domain.Identity{ExternalID: "m-1", Email: "u@example.com"}, []string{u.ID}},
		{"external id and email of two contacts", domain.Identity{ExternalID: "m-1", Email: "l@example.com"}, []string{u.ID, l.ID}},
		{"nobody", domain.Identity{Email: "nobody@example.com", ExternalID: "m-0"}, nil},
		{"marker only, within the search lag", domain.Identity{Marker: "ev-l"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := c.Find(ctx, tt.id)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			var ids []string
			for _, m := range ms {
				ids = append(ids, m.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.wantIDs, ",") {
				t.Errorf("Find = %v, want %v", ids, tt.wantIDs)
			}
		})
	}
	ms, _ := c.Find(ctx, domain.Identity{Email: "u@example.com"})
	if m := ms[0]; m.Role != domain.RoleUser || m.ExternalID != "m-1" || m.Marker != "ev-u" || m.CreatedAt != e.clock.Now().Unix() {
		t.Errorf("user match = %+v", m)
	}
	e.clock.Add(30 * time.Second)
	ms, err = c.Find(ctx, domain.Identity{Marker: "ev-l"})
	if err != nil || len(ms) != 1 || ms[0].ID != l.ID || ms[0].Role != domain.RoleLead {
		t.Errorf("Find by marker after the lag = %+v, %v", ms, err)
	}

	for _, tt := range []struct {
		name string
		c    *Client
		id   domain.Identity
	}{
		{"empty identity", c, domain.Identity{}},
		{"external id only, no property to find it by", e.client(emuToken, nil), domain.Identity{ExternalID: "m-1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.Find(ctx, tt.id)
			if pe := portsError(t, err); pe.Kind != ports.Permanent {
				t.Errorf("Find = %v, want Permanent", err)
			}
		})
	}
}

func TestUpdateNeverChangesKind(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, nil)
	created, err := c.Create(ctx, lead("ada@example.com", "ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the contact says, the stage and the marker stay.
	err = c.Update(ctx, created.ID, domain.Contact{Role: domain.RoleUser, Email: "ada@example.com", Name: "Ada",
		Custom: map[string]any{"referral_link": "https://r.example/new"}, Marker: "ev-2"})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	p := e.emu.Contacts(emuToken)[0].Properties
	if p["lifecyclestage"] != "lead" || p[DefaultMarkerProperty] != "ev-1" {
		t.Errorf("after update: lifecyclestage %q, marker %q; want lead, ev-1", p["lifecyclestage"], p[DefaultMarkerProperty])
	}
	if p["referral_link"] != "https://r.example/new" || p["firstname"] != "Ada" || p["lastname"] != "Lovelace" || p["phone"] != "+44 20 1234" {
		t.Errorf("after update: %v; want the mapped fields written and the others kept", p)
	}
	// An update with nothing to write sends nothing.
	before := len(e.emu.Requests())
	if err := c.Update(ctx, created.ID, domain.Contact{Role: domain.RoleUser}); err != nil {
		t.Fatal(err)
	}
	if len(e.emu.Requests()) != before {
		t.Error("an empty update was sent")
	}
}

func TestUpdateVanishedIsNotFound(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, nil)
	created, err := c.Create(ctx, lead("ada@example.com", "ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	e.emu.Delete(emuToken, created.ID)
	err = c.Update(ctx, created.ID, domain.Contact{Name: "Ada"})
	if pe := portsError(t, err); pe.Kind != ports.NotFound || pe.Status != 404 || pe.Code != "OBJECT_NOT_FOUND" {
		t.Errorf("Update = %v, want NotFound", err)
	}
	if ports.KindOf(err) != ports.NotFound {
		t.Errorf("KindOf = %v", ports.KindOf(err))
	}
	// And the person is simply not found by email any more.
	if ms, err := c.Find(ctx, domain.Identity{Email: "ada@example.com"}); err != nil || len(ms) != 0 {
		t.Errorf("Find = %v, %v; want none", ms, err)
	}
}

func TestClassification(t *testing.T) {
	tests := []struct {
		name          string
		token         string
		faults        emulator.Faults
		do            func(c *Client) error
		wantKind      ports.ErrorKind
		wantUncertain bool
		wantIn        string // substring of the error
		wantRequests  int
	}{
		{"unknown token", "pat-na1-wrong", emulator.Faults{}, func(c *Client) error {
			_, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
			return err
		}, ports.Unauthorized, false, "INVALID_AUTHENTICATION", 1},
		{"missing scope", emuReadOnly, emulator.Faults{}, func(c *Client) error {
			_, err := c.Create(ctx, lead("a@example.com", ""))
			return err
		}, ports.Unauthorized, false, "MISSING_SCOPES", 1},
		{"unknown property", emuLimited, emulator.Faults{}, func(c *Client) error {
			_, err := c.Create(ctx, lead("a@example.com", ""))
			return err
		}, ports.Permanent, false, "PROPERTY_DOESNT_EXIST lead_source, PROPERTY_DOESNT_EXIST referral_link", 1},
		{"invalid email", emuToken, emulator.Faults{}, func(c *Client) error {
			_, err := c.Create(ctx, lead("not-an-email", ""))
			return err
		}, ports.Permanent, false, "INVALID_EMAIL email", 1},
		{"5xx on a read, retried", emuToken, emulator.Faults{ServerErrorRate: 1}, func(c *Client) error {
			_, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
			return err
		}, ports.Transient, false, "HTTP 5", DefaultMaxAttempts},
		{"5xx on a create, not repeated", emuToken, emulator.Faults{ServerErrorRate: 1}, func(c *Client) error {
			_, err := c.Create(ctx, lead("a@example.com", ""))
			return err
		}, ports.Transient, true, "HTTP 5", 1},
		{"5xx on an update, retried", emuToken, emulator.Faults{ServerErrorRate: 1}, func(c *Client) error {
			return c.Update(ctx, "123", domain.Contact{Name: "A"})
		}, ports.Transient, false, "HTTP 5", DefaultMaxAttempts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEmu(t, func(c *emulator.Config) { c.Faults = tt.faults })
			c := e.client(tt.token, nil)
			err := tt.do(c)
			pe := portsError(t, err)
			if pe.Kind != tt.wantKind || pe.Uncertain != tt.wantUncertain || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error = %v (kind %v, uncertain %v); want %v, uncertain %v, mentioning %q", err, pe.Kind, pe.Uncertain, tt.wantKind, tt.wantUncertain, tt.wantIn)
			}
			if n := len(e.emu.Requests()); n != tt.wantRequests {
				t.Errorf("requests = %d, want %d", n, tt.wantRequests)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Errorf("error contains the token: %v", err)
			}
			if strings.Contains(err.Error(), "a@example.com") || strings.Contains(err.Error(), "not-an-email") {
				t.Errorf("error contains the email: %v", err)
			}
		})
	}
}

func TestRateLimitHonoured(t *testing.T) {
	t.Run("paced within the budget: no 429", func(t *testing.T) {
		e := newEmu(t, nil)
		c := e.client(emuLimited, nil)
		for i := range 7 {
			if _, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: string(rune('a'+i)) + "@example.com"}); err != nil {
				t.Fatalf("Create %d: %v", i, err)
			}
		}
		for _, r := range e.emu.Requests() {
			if r.Status == 429 {
				t.Fatalf("request %d got 429; the pacing should have waited", r.Seq)
			}
		}
		if n := len(e.emu.Contacts(emuLimited)); n != 7 {
			t.Errorf("contacts = %d, want 7", n)
		}
		// 7 requests at 3 per 10 s span at least two interval ends.
		if e.clock.Total() < 2*7*time.Second {
			t.Errorf("waited %v in total, want at least %v", e.clock.Total(), 2*7*time.Second)
		}
	})
	t.Run("beyond the budget: RateLimited with RetryAfter, not sent", func(t *testing.T) {
		e := newEmu(t, nil)
		c := e.client(emuLimited, func(c *Config) { c.MaxRateLimitWait = time.Second })
		for i := range 3 {
			if _, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: string(rune('a'+i)) + "@example.com"}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "z@example.com"})
		pe := portsError(t, err)
		if pe.Kind != ports.RateLimited || pe.Uncertain || pe.RetryAfter < 9*time.Second || pe.RetryAfter > 11*time.Second {
			t.Errorf("Create = %v, RetryAfter %v; want RateLimited, about 10s", err, pe.RetryAfter)
		}
		if n := len(e.emu.Requests()); n != 3 {
			t.Errorf("requests = %d, want 3: the fourth must not be sent", n)
		}
	})
	t.Run("a 429 from HubSpot is waited out", func(t *testing.T) {
		e := newEmu(t, func(c *emulator.Config) {
			c.Faults = emulator.Faults{RateLimitBurstRate: 1, Operations: []string{emulator.OpCreateContact}}
		})
		c := e.client(emuToken, nil)
		// The burst repeats on every attempt: the budget runs out.
		_, err := c.Create(ctx, lead("a@example.com", ""))
		pe := portsError(t, err)
		if pe.Kind != ports.RateLimited || pe.Status != 429 || pe.RetryAfter < 10*time.Second || pe.Uncertain {
			t.Errorf("Create = %v, RetryAfter %v; want RateLimited 429 with the interval", err, pe.RetryAfter)
		}
		// Once the burst is over, the create goes through after a wait.
		if err := e.emu.SetFaults(emulator.Faults{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Create(ctx, lead("a@example.com", "")); err != nil {
			t.Fatalf("Create after the burst: %v", err)
		}
		if n := len(e.emu.Contacts(emuToken)); n != 1 {
			t.Errorf("contacts = %d, want 1", n)
		}
	})
	t.Run("daily limit: parked at once", func(t *testing.T) {
		e := newEmu(t, func(c *emulator.Config) {
			a := c.Tokens[emuToken]
			a.DailyLimit = 1
			c.Tokens[emuToken] = a
		})
		c := e.client(emuToken, nil)
		if _, err := c.Find(ctx, domain.Identity{Email: "a@example.com"}); err != nil {
			t.Fatal(err)
		}
		_, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
		pe := portsError(t, err)
		if pe.Kind != ports.RateLimited || pe.RetryAfter != DefaultDailyLimitWait || e.clock.Total() != 0 {
			t.Errorf("Find = %v, RetryAfter %v, waited %v; want RateLimited after %v without waiting", err, pe.RetryAfter, e.clock.Total(), DefaultDailyLimitWait)
		}
	})
	t.Run("search has its own pace", func(t *testing.T) {
		e := newEmu(t, nil)
		c := e.client(emuLimited, nil)
		for range 5 {
			if _, err := c.Find(ctx, domain.Identity{Marker: "ev-x"}); err != nil {
				t.Fatal(err)
			}
		}
		// Four a second: the fifth waited a second after the first.
		if got := e.clock.Total(); got != time.Second {
			t.Errorf("waited %v, want 1s", got)
		}
		for _, r := range e.emu.Requests() {
			if r.Status != 200 {
				t.Errorf("search answered %d", r.Status)
			}
		}
	})
}

func TestCancelledContext(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.Create(cctx, lead("a@example.com", ""))
	pe := portsError(t, err)
	if pe.Kind != ports.Transient || pe.Uncertain || !errors.Is(err, context.Canceled) {
		t.Errorf("Create = %v, want Transient, certain, context.Canceled", err)
	}
	if n := len(e.emu.Requests()); n != 0 {
		t.Errorf("requests = %d, want 0", n)
	}
}

func TestTimesForDateProperties(t *testing.T) {
	e := newEmu(t, nil)
	for _, p := range []string{
		`{"name":"signed_up","label":"Signed up","type":"datetime","fieldType":"date","groupName":"contactinformation"}`,
		`{"name":"signup_day","label":"Signup day","type":"date","fieldType":"date","groupName":"contactinformation"}`,
	} {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/crm/v3/properties/contacts", strings.NewReader(p))
		req.Header.Set("Authorization", "Bearer "+emuToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 201 {
			t.Fatalf("create property: %v %v", res, err)
		}
		_ = res.Body.Close() // only the status matters
	}
	c := e.client(emuToken, nil)
	if err := c.CheckProperties(ctx, []string{"signed_up", "signup_day", "referral_link"}); err != nil {
		t.Fatal(err)
	}
	signup := time.Date(2026, 9, 1, 13, 20, 0, 0, time.UTC).Unix() // the domain's times are Unix seconds
	_, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com",
		Custom: map[string]any{"signed_up": signup, "signup_day": signup, "referral_link": signup}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	p := e.emu.Contacts(emuToken)[0].Properties
	want := map[string]string{
		"signed_up":     "1788268800000", // epoch milliseconds
		"signup_day":    "1788220800000", // midnight UTC of the day
		"referral_link": "1788268800",    // a text property keeps the number
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("%s = %q, want %q", k, p[k], v)
		}
	}
}

func TestConcurrentCreatesOfOnePerson(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, nil)
	const n = 16
	results := make(chan ports.Created, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			got, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", Marker: fmt.Sprintf("ev-%d", i)})
			results <- got
			errs <- err
		}()
	}
	var own int
	ids := map[string]bool{}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Create: %v", err)
		}
		got := <-results
		ids[got.ID] = true
		if !got.Existing {
			own++
		}
	}
	if cs := e.emu.Contacts(emuToken); len(cs) != 1 || len(ids) != 1 || own != 1 {
		t.Errorf("contacts %d, distinct ids %d, creates not Existing %d; want 1, 1, 1", len(cs), len(ids), own)
	}
}
