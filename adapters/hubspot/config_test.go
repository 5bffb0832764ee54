package hubspot

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := Config{Connection: "hs", Token: "pat-na1-x"}
	if err := valid.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // each must appear
	}{
		{"every problem at once", func(c *Config) {
			*c = Config{Connection: " ", BaseURL: "ftp://x", APIVersion: "v4", LeadStage: "Lead Stage", MarkerProperty: "Bad-Name",
				ExternalIDProperty: "email", Timeout: -1, MaxAttempts: 99, MaxRateLimitWait: -1, SearchRateLimit: -1, DailyLimitWait: -1}
		}, []string{"Connection: is required", "BaseURL: scheme must be http or https", "Token: is required", `APIVersion: "v4"`,
			`LeadStage: "Lead Stage"`, `MarkerProperty: "Bad-Name"`, `ExternalIDProperty: "email" is a HubSpot property the adapter sets itself`,
			"Timeout: must not be negative", "MaxAttempts: must be between", "MaxRateLimitWait", "SearchRateLimit", "DailyLimitWait"}},
		{"token with white space", func(c *Config) { c.Token = "pat na1" }, []string{"Token: contains whitespace"}},
		{"same stage for both kinds", func(c *Config) { c.LeadStage, c.UserStage = "lead", "lead" }, []string{"UserStage: \"lead\" is also the LeadStage"}},
		{"external id is the marker", func(c *Config) { c.ExternalIDProperty = DefaultMarkerProperty }, []string{"is also the marker property"}},
		{"base URL with a query", func(c *Config) { c.BaseURL = "https://api.hubapi.com/?x=1" }, []string{"must not have a query"}},
		{"base URL with credentials", func(c *Config) { c.BaseURL = "https://u:p@api.hubapi.com" }, []string{"must not carry user information"}},
		{"lifecyclestage as marker", func(c *Config) { c.MarkerProperty = "lifecyclestage" }, []string{"MarkerProperty: \"lifecyclestage\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	for _, v := range []string{"v3", "2026-03", "2026-09", "2027-03"} {
		c := valid
		c.APIVersion = v
		if err := c.Validate(); err != nil {
			t.Errorf("APIVersion %q: %v", v, err)
		}
	}
}

func TestConfigDefaultsAndPaths(t *testing.T) {
	c := Config{Connection: " hs ", Token: "t", BaseURL: "http://127.0.0.1:1/"}.withDefaults()
	if c.Connection != "hs" || c.BaseURL != "http://127.0.0.1:1" || c.APIVersion != "2026-03" || c.LeadStage != "lead" ||
		c.UserStage != "customer" || c.MarkerProperty != "referrer_sync_event_id" || c.Timeout != 10*time.Second ||
		c.MaxAttempts != 4 || c.MaxRateLimitWait != 15*time.Second || c.SearchRateLimit != 4 || c.DailyLimitWait != 15*time.Minute {
		t.Errorf("defaults = %v", c)
	}
	if Config(Config{}).withDefaults().BaseURL != "https://api.hubapi.com" {
		t.Error("default base URL")
	}
	tests := []struct {
		version, objects, properties string
	}{
		{"2026-03", "/crm/objects/2026-03/contacts", "/crm/properties/2026-03/contacts"},
		{"v3", "/crm/v3/objects/contacts", "/crm/v3/properties/contacts"},
	}
	for _, tt := range tests {
		c := Config{APIVersion: tt.version}
		if c.objectsPath() != tt.objects || c.propertiesPath() != tt.properties {
			t.Errorf("%s: %s %s", tt.version, c.objectsPath(), c.propertiesPath())
		}
	}
}
