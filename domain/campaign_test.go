package domain_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/domain"
)

var connections = []string{"intercom", "intercom_eu"}

// validCampaign is a campaign without problems or warnings.
func validCampaign() domain.Campaign {
	return domain.Campaign{
		Connection:  "intercom",
		Action:      domain.ActionCreateUser,
		OnDuplicate: domain.OnDuplicateUpdate,
		Fields: []domain.Field{
			{From: domain.SourceReferrerEmail, To: domain.TargetEmail},
			{From: domain.SourceReferrerFirstName, To: domain.TargetName},
			{From: domain.SourceReferrerID, To: domain.TargetExternalID},
			{From: domain.SourceReferrerURL, To: "custom_attributes.referral_link"},
		},
	}
}

func withFields(c domain.Campaign, fields ...domain.Field) domain.Campaign {
	c.Fields = append([]domain.Field{{From: domain.SourceReferrerEmail, To: domain.TargetEmail}}, fields...)
	return c
}

func messages(errs []error) []string {
	var out []string
	for _, err := range errs {
		out = append(out, err.Error())
	}
	return out
}

func equalStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %d:\n  %s\nwant %d:\n  %s", what, len(got), strings.Join(got, "\n  "), len(want), strings.Join(want, "\n  "))
	}
}

func TestActionRole(t *testing.T) {
	tests := []struct {
		action domain.Action
		want   domain.Role
	}{
		{domain.ActionNothing, ""},
		{domain.ActionCreateLead, domain.RoleLead},
		{domain.ActionCreateUser, domain.RoleUser},
		{"create_admin", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.action), func(t *testing.T) {
			if got := tt.action.Role(); got != tt.want {
				t.Errorf("Role(): got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCampaignProblems(t *testing.T) {
	const p = "campaigns.camp_9"
	lead := func(fields ...domain.Field) domain.Campaign {
		return withFields(domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip}, fields...)
	}
	user := func(fields ...domain.Field) domain.Campaign {
		c := lead(fields...)
		c.Action = domain.ActionCreateUser
		return c
	}
	tests := []struct {
		name     string
		campaign domain.Campaign
		want     []string
	}{
		{name: "valid user campaign", campaign: validCampaign()},
		{name: "valid lead campaign", campaign: lead(domain.Field{From: domain.SourceReferrerURL, To: "custom_attributes.referral_link"})},
		{name: "nothing needs no connection, policy or fields", campaign: domain.Campaign{Action: domain.ActionNothing}},
		{
			name: "nothing ignores its fields", campaign: domain.Campaign{Action: domain.ActionNothing,
				Fields: []domain.Field{{From: "bogus", To: "bogus"}}},
		},
		{
			name:     "nothing with an unknown connection",
			campaign: domain.Campaign{Connection: "hubspot", Action: domain.ActionNothing},
			want:     []string{p + `.connection: "hubspot" is not a configured connection`},
		},
		{
			name: "every source is accepted",
			campaign: user(
				domain.Field{From: domain.SourceReferrerID, To: domain.TargetExternalID},
				domain.Field{From: domain.SourceReferrerFirstName, To: domain.TargetName},
				domain.Field{From: domain.SourceReferrerCode, To: "custom_attributes.code"},
				domain.Field{From: domain.SourceReferrerURL, To: "custom_attributes.link"},
				domain.Field{From: domain.SourceReferrerSource, To: "custom_attributes.source"},
				domain.Field{From: domain.SourceReferrerSignedUpAt, To: domain.TargetSignedUpAt},
				domain.Field{From: domain.SourceEventTime, To: domain.TargetLastSeenAt},
				domain.Field{From: domain.SourceCampaignID, To: "custom_attributes.campaign"},
				domain.Field{From: domain.SourceCampaignName, To: "custom_attributes.campaign_name"},
				domain.Field{From: domain.SourceEventID, To: "custom_attributes.event"},
				domain.Field{From: "referrer.meta.phone", To: domain.TargetPhone},
				domain.Field{From: "referrer.meta.opt_out", To: domain.TargetUnsubscribed},
				domain.Field{From: "referrer.meta.owner", To: domain.TargetOwnerID},
				domain.Field{From: "referrer.meta.photo", To: domain.TargetAvatar},
				domain.Field{From: domain.SourceEventTime, To: "custom_attributes.joined_at"},
			),
		},
		{
			name: "every fixed value type is accepted",
			campaign: lead(
				domain.Field{Value: "Spring", To: "custom_attributes.s"},
				domain.Field{Value: true, To: "custom_attributes.b"},
				domain.Field{Value: 7, To: "custom_attributes.i"},
				domain.Field{Value: int64(8), To: "custom_attributes.i64"},
				domain.Field{Value: 2.5, To: "custom_attributes.f"},
				domain.Field{Value: "2026-01-01T00:00:00Z", To: domain.TargetSignedUpAt},
				domain.Field{Value: 1767225600, To: domain.TargetLastSeenAt},
				domain.Field{Value: false, To: domain.TargetUnsubscribed},
				domain.Field{Value: "yes", To: "custom_attributes.yes"},
				domain.Field{Value: "42", To: domain.TargetOwnerID},
			),
		},
		{
			name:     "a 190 character custom attribute name is accepted",
			campaign: lead(domain.Field{From: domain.SourceReferrerCode, To: "custom_attributes." + strings.Repeat("a", 190)}),
		},
		{
			name:     "a 191 character custom attribute name is not",
			campaign: lead(domain.Field{From: domain.SourceReferrerCode, To: "custom_attributes." + strings.Repeat("a", 191)}),
			want:     []string{p + `.referrers.fields[1]: to "custom_attributes.` + strings.Repeat("a", 191) + `" is not a valid custom attribute name`},
		},
		{
			name:     "create without a connection",
			campaign: domain.Campaign{Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip, Fields: validCampaign().Fields[:1]},
			want:     []string{p + ".connection: is required"},
		},
		{
			name:     "unknown connection",
			campaign: domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip, Fields: validCampaign().Fields[:1]},
			want:     []string{p + `.connection: "hubspot" is not a configured connection`},
		},
		{
			name:     "unknown action",
			campaign: domain.Campaign{Connection: "intercom", Action: "create_admin", OnDuplicate: domain.OnDuplicateSkip, Fields: validCampaign().Fields[:1]},
			want:     []string{p + `.referrers.action: "create_admin" is not one of nothing, create_lead, create_user`},
		},
		{
			name:     "missing action",
			campaign: domain.Campaign{Connection: "intercom", OnDuplicate: domain.OnDuplicateSkip, Fields: validCampaign().Fields[:1]},
			want:     []string{p + `.referrers.action: "" is not one of nothing, create_lead, create_user`},
		},
		{
			name:     "missing on_duplicate",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateUser, Fields: validCampaign().Fields[:1]},
			want:     []string{p + ".referrers.on_duplicate: is required (skip or update)"},
		},
		{
			name:     "unknown on_duplicate",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateUser, OnDuplicate: "merge", Fields: validCampaign().Fields[:1]},
			want:     []string{p + `.referrers.on_duplicate: "merge" is not one of skip, update`},
		},
		{
			name:     "unknown on_duplicate with action nothing",
			campaign: domain.Campaign{Action: domain.ActionNothing, OnDuplicate: "merge"},
			want:     []string{p + `.referrers.on_duplicate: "merge" is not one of skip, update`},
		},
		{
			name:     "no fields",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip},
			want:     []string{p + ".referrers.fields: email is not mapped"},
		},
		{
			name: "email from the wrong source",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
				Fields: []domain.Field{{From: "referrer.meta.work_email", To: domain.TargetEmail}}},
			want: []string{p + ".referrers.fields[0]: email must be mapped from referrer.email"},
		},
		{
			name: "email as a fixed value",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
				Fields: []domain.Field{{Value: "ops@example.com", To: domain.TargetEmail}}},
			want: []string{p + ".referrers.fields[0]: email must be mapped from referrer.email"},
		},
		{
			name:     "external_id for a user is fine",
			campaign: user(domain.Field{From: domain.SourceReferrerID, To: domain.TargetExternalID}),
		},
		{
			name:     "external_id for a lead is not",
			campaign: lead(domain.Field{From: domain.SourceReferrerID, To: domain.TargetExternalID}),
			want:     []string{p + ".referrers.fields[1]: external_id can only be mapped for create_user"},
		},
		{
			name: "every field problem at once",
			campaign: domain.Campaign{
				Action:      domain.ActionCreateLead,
				OnDuplicate: "merge",
				Fields: []domain.Field{
					{From: domain.SourceReferrerID, To: domain.TargetExternalID},
					{To: domain.TargetName},
					{From: "referrer.nope", To: domain.TargetPhone},
					{From: domain.SourceReferrerID, Value: "x", To: domain.TargetAvatar},
					{Value: []string{"x"}, To: "custom_attributes.tags"},
					{From: domain.SourceReferrerFirstName},
					{From: domain.SourceReferrerCode, To: domain.TargetSignedUpAt},
					{Value: "tomorrow", To: domain.TargetLastSeenAt},
					{Value: "maybe", To: domain.TargetUnsubscribed},
					{From: domain.SourceReferrerCode, To: "custom_attributes.has space"},
					{From: domain.SourceReferrerCode, To: "custom_attributes.a.b"},
					{From: domain.SourceReferrerCode, To: "custom_attributes."},
					{From: domain.SourceReferrerCode, To: "nickname"},
					{From: domain.SourceReferrerCode, To: domain.TargetName},
					{Value: 1.5, To: domain.TargetSignedUpAt},
					{Value: 1, To: "unsubscribed_from_emails"},
					{From: "referrer.meta.", To: "custom_attributes.m"},
				},
			},
			want: []string{
				p + ".connection: is required",
				p + `.referrers.on_duplicate: "merge" is not one of skip, update`,
				p + ".referrers.fields[0]: external_id can only be mapped for create_user",
				p + ".referrers.fields[1]: one of from or value is required",
				p + `.referrers.fields[2]: from "referrer.nope" is not a known source`,
				p + ".referrers.fields[3]: from and value are mutually exclusive",
				p + ".referrers.fields[4]: value must be a string, boolean or number, not []string",
				p + ".referrers.fields[5]: to is required",
				p + ".referrers.fields[6]: signed_up_at needs a time source (referrer.signed_up_at or event.time)",
				p + `.referrers.fields[7]: last_seen_at: "tomorrow" is not an RFC 3339 time`,
				p + `.referrers.fields[8]: unsubscribed_from_emails: "maybe" is not a boolean`,
				p + `.referrers.fields[9]: to "custom_attributes.has space" is not a valid custom attribute name`,
				p + `.referrers.fields[10]: to "custom_attributes.a.b" is not a valid custom attribute name`,
				p + `.referrers.fields[11]: to "custom_attributes." is not a valid custom attribute name`,
				p + `.referrers.fields[12]: to "nickname" is not a known target`,
				p + `.referrers.fields[13]: target "name" is already mapped by fields[1]`,
				p + ".referrers.fields[14]: signed_up_at: 1.5 is not a time",
				p + `.referrers.fields[14]: target "signed_up_at" is already mapped by fields[6]`,
				p + ".referrers.fields[15]: unsubscribed_from_emails: 1 is not a boolean",
				p + `.referrers.fields[15]: target "unsubscribed_from_emails" is already mapped by fields[8]`,
				p + `.referrers.fields[16]: from "referrer.meta." is not a known source`,
				p + ".referrers.fields: email is not mapped",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			equalStrings(t, "Problems", messages(tt.campaign.Problems(p, connections)), tt.want)
		})
	}
}

func TestCampaignWarnings(t *testing.T) {
	const p = "campaigns.camp_9"
	noLink := withFields(validCampaign())
	tests := []struct {
		name     string
		campaign domain.Campaign
		want     []string
	}{
		{name: "link mapped", campaign: validCampaign()},
		{name: "link mapped to a standard field", campaign: withFields(validCampaign(), domain.Field{From: domain.SourceReferrerURL, To: domain.TargetAvatar})},
		{
			name: "link not mapped", campaign: noLink,
			want: []string{p + ".referrers.fields: the referral link (referrer.url) is not mapped; map it to distribute referral links through the CRM"},
		},
		{
			name: "link as a fixed value does not count", campaign: withFields(validCampaign(), domain.Field{Value: "referrer.url", To: "custom_attributes.link"}),
			want: []string{p + ".referrers.fields: the referral link (referrer.url) is not mapped; map it to distribute referral links through the CRM"},
		},
		{name: "action nothing needs no link", campaign: domain.Campaign{Action: domain.ActionNothing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			equalStrings(t, "Warnings", tt.campaign.Warnings(p), tt.want)
		})
	}
}

func TestCatalogProblems(t *testing.T) {
	noEmail := domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip}
	badConn := validCampaign()
	badConn.Connection = "hubspot"
	tests := []struct {
		name    string
		catalog domain.Catalog
		want    []string
	}{
		{name: "empty", catalog: domain.Catalog{}},
		{
			name: "valid",
			catalog: domain.Catalog{
				Campaigns: map[string]domain.Campaign{"camp_1": validCampaign(), "camp_2": {Action: domain.ActionNothing}},
				Default:   &domain.Campaign{Action: domain.ActionNothing},
			},
		},
		{
			name: "every campaign and the default, sorted by path",
			catalog: domain.Catalog{
				Campaigns: map[string]domain.Campaign{
					"camp_b": noEmail,
					"camp_a": badConn,
					"camp_c": validCampaign(),
					"":       {Action: domain.ActionNothing},
				},
				Default: &domain.Campaign{Connection: "intercom", Action: "maybe", OnDuplicate: domain.OnDuplicateSkip, Fields: validCampaign().Fields[:1]},
			},
			want: []string{
				"campaigns: a campaign id is empty",
				`campaigns.camp_a.connection: "hubspot" is not a configured connection`,
				"campaigns.camp_b.referrers.fields: email is not mapped",
				`default_campaign.referrers.action: "maybe" is not one of nothing, create_lead, create_user`,
			},
		},
		{
			name: "several problems in several campaigns",
			catalog: domain.Catalog{
				Campaigns: map[string]domain.Campaign{
					"camp_9": {Action: domain.ActionCreateLead, Fields: []domain.Field{{From: domain.SourceReferrerID, To: domain.TargetExternalID}}},
					"camp_1": {Connection: "hubspot", Action: domain.ActionCreateUser, OnDuplicate: "merge"},
				},
			},
			want: []string{
				`campaigns.camp_1.connection: "hubspot" is not a configured connection`,
				`campaigns.camp_1.referrers.on_duplicate: "merge" is not one of skip, update`,
				"campaigns.camp_1.referrers.fields: email is not mapped",
				"campaigns.camp_9.connection: is required",
				"campaigns.camp_9.referrers.on_duplicate: is required (skip or update)",
				"campaigns.camp_9.referrers.fields[0]: external_id can only be mapped for create_user",
				"campaigns.camp_9.referrers.fields: email is not mapped",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			equalStrings(t, "Problems", messages(tt.catalog.Problems(connections)), tt.want)
		})
	}
}

func TestCatalogLookup(t *testing.T) {
	listed := validCampaign()
	def := domain.Campaign{Connection: "intercom_eu", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip}
	withDefault := &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_1": listed}, Default: &def}
	withoutDefault := &domain.Catalog{Campaigns: map[string]domain.Campaign{"camp_1": listed}}
	tests := []struct {
		name    string
		catalog *domain.Catalog
		id      string
		want    domain.Campaign
		wantOK  bool
	}{
		{name: "listed", catalog: withDefault, id: "camp_1", want: listed, wantOK: true},
		{name: "listed without default", catalog: withoutDefault, id: "camp_1", want: listed, wantOK: true},
		{name: "default", catalog: withDefault, id: "camp_2", want: def, wantOK: true},
		{name: "unconfigured", catalog: withoutDefault, id: "camp_2"},
		{name: "nil catalog", catalog: nil, id: "camp_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.catalog.Lookup(tt.id)
			if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lookup(%q): got %+v, %v, want %+v, %v", tt.id, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
