package domain_test

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/domain"
)

// propertyTargets is a vocabulary shaped like a HubSpot connection's, built
// here as the configuration builds it: bare property names are custom
// fields, a few names are refused, external_id only with a property for it.
func propertyTargets(externalID bool) *domain.Targets {
	t := &domain.Targets{
		Fields:       map[string]domain.ContactField{"email": domain.FieldEmail, "phone": domain.FieldPhone},
		CustomName:   regexp.MustCompile(`^[a-z][a-z0-9_]*$`),
		CustomMaxLen: 100,
		CustomNoun:   "property name",
		Hint:         "use a property's internal name",
		Refused: map[string]string{
			"lifecyclestage": "it is set from the campaign's action",
			"name":           "use firstname and lastname",
			"signed_up_at":   "no such contact property",
		},
	}
	if externalID {
		t.Fields["external_id"] = domain.FieldExternalID
	} else {
		t.Refused["external_id"] = "set external_id_property on the connection"
	}
	return t
}

func TestCampaignProblemsWithTargets(t *testing.T) {
	const p = "campaigns.camp_9"
	campaign := func(action domain.Action, targets *domain.Targets, fields ...domain.Field) domain.Campaign {
		return domain.Campaign{Connection: "intercom", Action: action, OnDuplicate: domain.OnDuplicateSkip, Targets: targets,
			Fields: append([]domain.Field{{From: domain.SourceReferrerEmail, To: "email"}}, fields...)}
	}
	tests := []struct {
		name     string
		campaign domain.Campaign
		want     []string
	}{
		{
			name: "property names are custom fields",
			campaign: campaign(domain.ActionCreateLead, propertyTargets(false),
				domain.Field{From: domain.SourceReferrerFirstName, To: "firstname"},
				domain.Field{From: domain.SourceReferrerURL, To: "referral_link"},
				domain.Field{From: "referrer.meta.phone", To: "phone"},
				domain.Field{From: domain.SourceEventTime, To: "joined_at"},
				domain.Field{Value: true, To: "opted_in"},
				domain.Field{From: domain.SourceReferrerCode, To: "a" + strings.Repeat("b", 99)},
			),
		},
		{
			name:     "external_id with its property, for a user",
			campaign: campaign(domain.ActionCreateUser, propertyTargets(true), domain.Field{From: domain.SourceReferrerID, To: "external_id"}),
		},
		{
			name:     "external_id with its property, for a lead",
			campaign: campaign(domain.ActionCreateLead, propertyTargets(true), domain.Field{From: domain.SourceReferrerID, To: "external_id"}),
			want:     []string{p + ".referrers.fields[1]: external_id can only be mapped for create_user"},
		},
		{
			name: "refused, unknown and the standard vocabulary's names",
			campaign: campaign(domain.ActionCreateUser, propertyTargets(false),
				domain.Field{From: domain.SourceReferrerID, To: "external_id"},
				domain.Field{Value: "x", To: "lifecyclestage"},
				domain.Field{From: domain.SourceReferrerFirstName, To: "name"},
				domain.Field{From: domain.SourceReferrerSignedUpAt, To: "signed_up_at"},
				domain.Field{From: domain.SourceReferrerURL, To: "custom_attributes.referral_link"},
				domain.Field{From: domain.SourceReferrerFirstName, To: "FirstName"},
				domain.Field{From: domain.SourceReferrerCode, To: "a" + strings.Repeat("b", 100)},
			),
			want: []string{
				p + `.referrers.fields[1]: to "external_id" cannot be mapped: set external_id_property on the connection`,
				p + `.referrers.fields[2]: to "lifecyclestage" cannot be mapped: it is set from the campaign's action`,
				p + `.referrers.fields[3]: to "name" cannot be mapped: use firstname and lastname`,
				p + `.referrers.fields[4]: to "signed_up_at" cannot be mapped: no such contact property`,
				p + `.referrers.fields[5]: to "custom_attributes.referral_link" is not a known target: use a property's internal name`,
				p + `.referrers.fields[6]: to "FirstName" is not a known target: use a property's internal name`,
				p + `.referrers.fields[7]: to "a` + strings.Repeat("b", 100) + `" is not a known target: use a property's internal name`,
			},
		},
		{
			name: "email must still come from referrer.email",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
				Targets: propertyTargets(false), Fields: []domain.Field{{From: "referrer.meta.work_email", To: "email"}}},
			want: []string{p + ".referrers.fields[0]: email must be mapped from referrer.email"},
		},
		{
			name: "email is found by the field it sets, not by its name",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
				Targets: &domain.Targets{Fields: map[string]domain.ContactField{"mail": domain.FieldEmail}},
				Fields:  []domain.Field{{From: domain.SourceReferrerEmail, To: "mail"}}},
		},
		{
			name: "a custom field named email does not map the email",
			campaign: domain.Campaign{Connection: "intercom", Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateSkip,
				Targets: &domain.Targets{Fields: map[string]domain.ContactField{"mail": domain.FieldEmail}},
				Fields:  []domain.Field{{From: domain.SourceReferrerEmail, To: "email"}}},
			want: []string{p + ".referrers.fields: email is not mapped"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			equalStrings(t, "Problems", messages(tt.campaign.Problems(p, connections)), tt.want)
		})
	}
}

func TestMapContactWithTargets(t *testing.T) {
	c := domain.Campaign{Connection: "hubspot", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateUpdate, Targets: propertyTargets(true),
		Fields: []domain.Field{
			{From: domain.SourceReferrerEmail, To: "email"},
			{From: domain.SourceReferrerFirstName, To: "firstname"},
			{From: "referrer.meta.phone", To: "phone"},
			{From: domain.SourceReferrerID, To: "external_id"},
			{From: domain.SourceReferrerURL, To: "referral_link"},
			{From: domain.SourceEventTime, To: "joined_at"},
			{Value: 3, To: "score"},
		}}
	got, err := domain.MapContact(c, mappingEvent())
	if err != nil {
		t.Fatalf("MapContact: %v", err)
	}
	want := domain.Contact{
		Role: domain.RoleUser, Email: "ada@example.com", Phone: "+44 20 7946 0000", ExternalID: "usr_8812",
		Custom: map[string]any{"firstname": "Ada", "referral_link": "https://refer.example.com/ADA-7Q2", "joined_at": int64(eventUnix), "score": int64(3)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MapContact:\n got %s\nwant %s", describe(got), describe(want))
	}

	t.Run("a refused target is a mapping error", func(t *testing.T) {
		c := c
		c.Fields = []domain.Field{{From: domain.SourceReferrerFirstName, To: "name"}}
		if _, err := domain.MapContact(c, mappingEvent()); err == nil || reasonOf(t, err) != domain.ReasonMapping {
			t.Errorf("MapContact: got %v, want a mapping error", err)
		}
	})
	t.Run("the standard vocabulary reads custom_attributes. differently", func(t *testing.T) {
		c := c
		c.Targets = nil
		c.Fields = []domain.Field{{From: domain.SourceReferrerFirstName, To: "custom_attributes.firstname"}}
		got, err := domain.MapContact(c, mappingEvent())
		if err != nil || !reflect.DeepEqual(got.Custom, map[string]any{"firstname": "Ada"}) {
			t.Errorf("MapContact: got %s, %v, want Custom firstname=Ada", describe(got), err)
		}
	})
}

func TestStandardTargets(t *testing.T) {
	a := domain.StandardTargets()
	a.Fields["nickname"] = domain.FieldName
	b := domain.StandardTargets()
	if _, ok := b.Fields["nickname"]; ok {
		t.Fatal("StandardTargets: a change to one result shows in the next")
	}
	// nil and StandardTargets() are the same vocabulary.
	for _, to := range []string{"email", "name", "avatar", "custom_attributes.x", "custom_attributes.", "x", "lifecyclestage", "custom_attributes.a b"} {
		f := domain.Field{From: domain.SourceReferrerCode, To: to}
		withNil := withFields(validCampaign(), f)
		withStd := withNil
		withStd.Targets = b
		got, want := messages(withStd.Problems("p", connections)), messages(withNil.Problems("p", connections))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("to %q: StandardTargets gives %q, nil gives %q", to, got, want)
		}
	}
}

// FuzzTargets checks that validation and mapping agree for any target name
// in either vocabulary: a field that Problems accepts always maps, and
// maps into exactly one contact field.
func FuzzTargets(f *testing.F) {
	for _, s := range []string{"email", "firstname", "custom_attributes.x", "custom_attributes.", "name", "external_id", "lifecyclestage",
		"A", "a.b", "phone", "signed_up_at", "unsubscribed_from_emails", "x y", strings.Repeat("a", 101)} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, to string, property bool) {
		var targets *domain.Targets
		if property {
			targets = propertyTargets(true)
		}
		c := domain.Campaign{Connection: "intercom", Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateSkip, Targets: targets,
			Fields: []domain.Field{{From: domain.SourceReferrerEmail, To: "email"}, {Value: "2026-01-01T00:00:00Z", To: to}}}
		if to == "email" || len(c.Problems("p", connections)) > 0 {
			return
		}
		got, err := domain.MapContact(c, mappingEvent())
		if err != nil {
			t.Fatalf("to %q: Problems accepted it, MapContact: %v", to, err)
		}
		base, _ := domain.MapContact(domain.Campaign{Action: domain.ActionCreateUser, Targets: targets, Fields: c.Fields[:1]}, mappingEvent())
		if reflect.DeepEqual(got, base) {
			t.Fatalf("to %q: accepted, but the contact is unchanged: %s", to, describe(got))
		}
	})
}
