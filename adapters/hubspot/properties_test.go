package hubspot

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

func TestCheckProperties(t *testing.T) {
	tests := []struct {
		name         string
		token        string
		mod          func(*Config)
		names        []string
		wantKind     ports.ErrorKind // 0: no error
		wantMissing  []string
		wantReadOnly []string
		wantProblems []string // substrings
	}{
		{"all present", emuToken, nil, []string{"firstname", "lastname", "phone", "referral_link"}, 0, nil, nil, nil},
		{"every missing one listed, sorted", emuToken, nil, []string{"zeta_link", "referral_link", "alpha_code", "firstname"},
			ports.Permanent, []string{"alpha_code", "zeta_link"}, nil, nil},
		{"the marker is required", emuBare, nil, []string{"referral_link"},
			ports.Permanent, []string{"referral_link", DefaultMarkerProperty}, nil, nil},
		{"read-only", emuToken, nil, []string{"hs_object_id", "createdate"}, ports.Permanent, nil, []string{"createdate", "hs_object_id"}, nil},
		{"external id property must be unique", emuToken, func(c *Config) { c.ExternalIDProperty = "plain_id" }, nil,
			ports.Permanent, nil, nil, []string{"plain_id does not have unique values"}},
		{"external id property present and unique", emuToken, func(c *Config) { c.ExternalIDProperty = "member_id" }, nil, 0, nil, nil, nil},
		{"external id property missing", emuToken, func(c *Config) { c.ExternalIDProperty = "customer_no" }, nil,
			ports.Permanent, []string{"customer_no"}, nil, nil},
		{"stages must be options", emuToken, func(c *Config) { c.LeadStage, c.UserStage = "prospect", "1234" }, nil,
			ports.Permanent, nil, nil, []string{`lead stage "prospect" is not an option`, `user stage "1234" is not an option`}},
		{"adapter-owned properties cannot be mapped", emuToken, nil, []string{"lifecyclestage", DefaultMarkerProperty},
			ports.Permanent, nil, nil, []string{"lifecyclestage is set from the campaign's action", "is the marker property"}},
		{"bad token", "pat-na1-wrong", nil, nil, ports.Unauthorized, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEmu(t, nil)
			err := e.client(tt.token, tt.mod).CheckProperties(ctx, tt.names)
			if tt.wantKind == 0 {
				if err != nil {
					t.Fatalf("CheckProperties = %v, want nil", err)
				}
				return
			}
			if pe := portsError(t, err); pe.Kind != tt.wantKind {
				t.Fatalf("CheckProperties = %v (kind %v), want %v", err, pe.Kind, tt.wantKind)
			}
			if tt.wantKind != ports.Permanent {
				return
			}
			var perr *PropertyError
			if !errors.As(err, &perr) {
				t.Fatalf("CheckProperties = %v, want a *PropertyError inside", err)
			}
			if !slices.Equal(perr.Missing, tt.wantMissing) || !slices.Equal(perr.ReadOnly, tt.wantReadOnly) {
				t.Errorf("missing %v, read-only %v; want %v, %v", perr.Missing, perr.ReadOnly, tt.wantMissing, tt.wantReadOnly)
			}
			for _, w := range tt.wantProblems {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if len(tt.wantMissing) > 0 && !strings.Contains(err.Error(), "missing contact properties: "+strings.Join(tt.wantMissing, ", ")) {
				t.Errorf("error %q does not list the missing properties", err)
			}
		})
	}
}

func TestEnsureMarker(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuBare, nil)
	created, err := c.EnsureMarker(ctx)
	if err != nil || !created {
		t.Fatalf("EnsureMarker = %v, %v; want created", created, err)
	}
	created, err = c.EnsureMarker(ctx)
	if err != nil || created {
		t.Fatalf("second EnsureMarker = %v, %v; want present", created, err)
	}
	if err := c.CheckProperties(ctx, nil); err != nil {
		t.Errorf("CheckProperties after EnsureMarker = %v", err)
	}
	// The marker now works end to end.
	got, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Marker: "ev-1"})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
	if err != nil || len(ms) != 1 || ms[0].ID != got.ID || ms[0].Marker != "ev-1" {
		t.Errorf("Find = %+v, %v", ms, err)
	}

	ro := newEmu(t, func(c *emulator.Config) {
		a := c.Tokens[emuReadOnly]
		a.Properties = nil
		c.Tokens[emuReadOnly] = a
	})
	_, err = ro.client(emuReadOnly, nil).EnsureMarker(ctx)
	if pe := portsError(t, err); pe.Kind != ports.Unauthorized {
		t.Errorf("EnsureMarker with a read-only token = %v, want Unauthorized", err)
	}
}

func TestCreateProperty(t *testing.T) {
	e := newEmu(t, nil)
	c := e.client(emuToken, nil)
	tests := []struct {
		name     string
		prop     string
		unique   bool
		wantKind ports.ErrorKind
		wantIn   string
	}{
		{"new", "campaign_name", false, 0, ""},
		{"new unique", "customer_no", true, 0, ""},
		{"exists as text: idempotent", "referral_link", false, 0, ""},
		{"exists, not unique", "plain_id", true, ports.Permanent, "without unique values"},
		{"exists with another type", "lifecyclestage", false, ports.Permanent, `type "enumeration"`},
		{"invalid name", "Bad Name", false, ports.Permanent, "internal name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.CreateProperty(ctx, tt.prop, "", "", tt.unique)
			if tt.wantKind == 0 {
				if err != nil {
					t.Fatalf("CreateProperty = %v", err)
				}
				return
			}
			if pe := portsError(t, err); pe.Kind != tt.wantKind || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("CreateProperty = %v, want %v mentioning %q", err, tt.wantKind, tt.wantIn)
			}
		})
	}
	props, err := c.Properties(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(props, func(p Property) bool { return p.Name == "customer_no" })
	if i < 0 || !props[i].Unique || props[i].Type != "string" || props[i].HubSpotDefined {
		t.Errorf("customer_no = %+v", props)
	}
}
