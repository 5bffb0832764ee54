package config_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/domain"
)

// hubspotDoc is a file with one intercom and one hubspot connection;
// connection is the hubspot connection's extra keys, fields the hubspot
// campaign's fields after the email.
func hubspotDoc(connection, action string, fields ...string) string {
	var fl strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&fl, "        - %s\n", f)
	}
	return fmt.Sprintf(`
nats: {url: "nats://127.0.0.1:4222"}
connections:
  ic:
    type: intercom
    access_token_env: INTERCOM_ACCESS_TOKEN
  hs:
    type: hubspot
    access_token_env: HUBSPOT_ACCESS_TOKEN
%s
campaigns:
  on_intercom:
    connection: ic
    referrers:
      action: create_user
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.referral_link}
  on_hubspot:
    connection: hs
    referrers:
      action: %s
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
%s`, connection, action, fl.String())
}

func validateDoc(t *testing.T, doc string) []string {
	t.Helper()
	t.Setenv("NATS_URL", "")
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if err := f.Validate(); err != nil {
		return strings.Split(err.Error(), "\n")
	}
	return nil
}

func TestHubSpotConnectionValidates(t *testing.T) {
	tests := []struct {
		name       string
		connection string
		action     string
		fields     []string
		want       []string // substrings, one per problem, in order
	}{
		{
			name: "property names, phone and defaults", action: "create_lead",
			fields: []string{
				"{from: referrer.first_name, to: firstname}",
				"{from: referrer.meta.last_name, to: lastname}",
				"{from: referrer.meta.phone, to: phone}",
				"{from: referrer.url, to: referral_link}",
				"{from: event.time, to: joined_at}",
				"{value: 42, to: hubspot_owner_id}",
			},
		},
		{
			name:       "every hubspot key",
			connection: "    base_url: http://127.0.0.1:8090\n    api_version: \"2026-03\"\n    timeout: 5s\n    marker_attribute: rs_event\n    lead_stage: subscriber\n    user_stage: \"12345\"\n    external_id_property: referrer_id\n    search_lag: 2s\n    commit_grace: 10s",
			action:     "create_user",
			fields:     []string{"{from: referrer.id, to: external_id}", "{from: referrer.url, to: referral_link}"},
		},
		{name: "the v3 path family", connection: "    api_version: v3", action: "create_lead"},
		{
			name: "Intercom's targets are refused", action: "create_user",
			fields: []string{
				"{from: referrer.first_name, to: name}",
				"{from: referrer.url, to: custom_attributes.referral_link}",
				"{from: referrer.signed_up_at, to: signed_up_at}",
				"{from: event.time, to: last_seen_at}",
				"{value: true, to: unsubscribed_from_emails}",
				"{from: referrer.meta.photo, to: avatar}",
				"{value: 42, to: owner_id}",
				"{from: referrer.id, to: external_id}",
			},
			want: []string{
				`campaigns.on_hubspot.referrers.fields[1]: to "name" cannot be mapped: it is Intercom's name field; HubSpot has firstname and lastname`,
				`campaigns.on_hubspot.referrers.fields[2]: to "custom_attributes.referral_link" is not a known target: a hubspot connection maps to contact properties by their internal names`,
				`campaigns.on_hubspot.referrers.fields[3]: to "signed_up_at" cannot be mapped: an Intercom contact field`,
				`campaigns.on_hubspot.referrers.fields[4]: to "last_seen_at" cannot be mapped`,
				`campaigns.on_hubspot.referrers.fields[5]: to "unsubscribed_from_emails" cannot be mapped`,
				`campaigns.on_hubspot.referrers.fields[6]: to "avatar" cannot be mapped`,
				`campaigns.on_hubspot.referrers.fields[7]: to "owner_id" cannot be mapped: it is Intercom's owner field; HubSpot's is the property hubspot_owner_id`,
				`campaigns.on_hubspot.referrers.fields[8]: to "external_id" cannot be mapped: HubSpot has no external id of its own; set the connection's external_id_property`,
			},
		},
		{
			name: "properties the service sets, and names HubSpot would not have", connection: "    marker_attribute: rs_event\n    external_id_property: referrer_id",
			action: "create_lead",
			fields: []string{
				"{value: lead, to: lifecyclestage}",
				"{from: event.id, to: rs_event}",
				"{from: referrer.id, to: referrer_id}",
				"{from: referrer.id, to: external_id}",
				"{from: referrer.first_name, to: FirstName}",
				"{from: referrer.first_name, to: hs_object_id}",
			},
			want: []string{
				`fields[1]: to "lifecyclestage" cannot be mapped: it is set from the campaign's action`,
				`fields[2]: to "rs_event" cannot be mapped: it is the connection's marker property`,
				`fields[3]: to "referrer_id" cannot be mapped: it is the connection's external_id_property; map external_id instead`,
				`fields[4]: external_id can only be mapped for create_user`,
				`fields[5]: to "FirstName" is not a known target`,
				`fields[6]: to "hs_object_id" cannot be mapped: it is read-only in HubSpot`,
			},
		},
		{
			name:       "the default marker is refused as a target",
			connection: "", action: "create_lead", fields: []string{"{from: event.id, to: referrer_sync_event_id}"},
			want: []string{`fields[1]: to "referrer_sync_event_id" cannot be mapped: it is the connection's marker property`},
		},
		{
			name:       "keys that do not apply or are malformed",
			connection: "    region: eu\n    api_version: \"2.14\"\n    lead_stage: Lead\n    user_stage: lead\n    marker_attribute: Referrer-Sync\n    external_id_property: email",
			action:     "create_lead",
			want: []string{
				"connections.hs.region: does not apply to type hubspot",
				`connections.hs.api_version: "2.14" is neither v3 nor a date version`,
				`connections.hs.lead_stage: "Lead" is not a lifecycle stage's internal value`,
				`connections.hs.marker_attribute: "Referrer-Sync" is not a HubSpot property's internal name`,
				`connections.hs.external_id_property: "email" is a HubSpot property the service sets itself`,
			},
		},
		{
			name: "lead and user stages must differ", connection: "    lead_stage: customer", action: "create_lead",
			want: []string{`connections.hs.user_stage: "customer" is also the lead stage`},
		},
		{
			name: "the marker and the external id are different properties", connection: "    marker_attribute: ref_id\n    external_id_property: ref_id", action: "create_lead",
			want: []string{`connections.hs.external_id_property: "ref_id" is also the marker property`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := validateDoc(t, hubspotDoc(tt.connection, tt.action, tt.fields...))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n  %s", len(got), len(tt.want), strings.Join(got, "\n  "))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d: got %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestHubSpotKeysOnIntercomAreRefused(t *testing.T) {
	doc := strings.Replace(hubspotDoc("", "create_lead"), "    access_token_env: INTERCOM_ACCESS_TOKEN",
		"    access_token_env: INTERCOM_ACCESS_TOKEN\n    lead_stage: lead\n    user_stage: customer\n    external_id_property: referrer_id", 1)
	got := validateDoc(t, doc)
	want := []string{"connections.ic.lead_stage: applies only to type hubspot", "connections.ic.user_stage: applies only to type hubspot",
		"connections.ic.external_id_property: applies only to type hubspot"}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestCatalogReadsTargetsByConnectionType: the same target name means what
// the campaign's connection type says, so MapContact, not only Validate,
// follows the connection.
func TestCatalogReadsTargetsByConnectionType(t *testing.T) {
	t.Setenv("NATS_URL", "")
	f, err := config.Parse([]byte(hubspotDoc("    external_id_property: referrer_id", "create_user",
		"{from: referrer.first_name, to: firstname}", "{from: referrer.id, to: external_id}", "{from: referrer.url, to: referral_link}")))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	ev := domain.ReferrerJoined{ID: "e1", CampaignID: "on_hubspot", Referrer: domain.Referrer{ID: "usr_1", FirstName: "Ada", Email: "ada@example.com", URL: "https://r.example/1"}}
	cat := f.Catalog()
	hs, _ := cat.Lookup("on_hubspot")
	got, err := domain.MapContact(hs, ev)
	if err != nil {
		t.Fatalf("MapContact(on_hubspot): %v", err)
	}
	if got.Email != "ada@example.com" || got.ExternalID != "usr_1" || got.Name != "" ||
		got.Custom["firstname"] != "Ada" || got.Custom["referral_link"] != "https://r.example/1" || len(got.Custom) != 2 {
		t.Errorf("MapContact(on_hubspot): got %+v", got)
	}
	ic, _ := cat.Lookup("on_intercom")
	got, err = domain.MapContact(ic, ev)
	if err != nil {
		t.Fatalf("MapContact(on_intercom): %v", err)
	}
	if got.Name != "Ada" || got.Custom["referral_link"] != "https://r.example/1" || len(got.Custom) != 1 {
		t.Errorf("MapContact(on_intercom): got %+v", got)
	}
}

func TestSearchLagDefaultsByType(t *testing.T) {
	tests := []struct {
		conn config.Connection
		want time.Duration
	}{
		{config.Connection{Type: config.TypeIntercom}, 0},
		{config.Connection{Type: config.TypeHubSpot}, config.HubSpotSearchLag},
		{config.Connection{Type: config.TypeHubSpot, SearchLag: config.Duration(time.Minute)}, time.Minute},
		{config.Connection{Type: config.TypeIntercom, SearchLag: config.Duration(time.Second)}, time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s", tt.conn.Type, time.Duration(tt.conn.SearchLag)), func(t *testing.T) {
			if got := tt.conn.SearchLagOrDefault(); got != tt.want {
				t.Errorf("SearchLagOrDefault: got %s, want %s", got, tt.want)
			}
		})
	}
	if config.HubSpotSearchLag <= 0 || config.HubSpotSearchLag > 30*time.Second {
		t.Errorf("HubSpotSearchLag %s: want a few seconds", config.HubSpotSearchLag)
	}
}
