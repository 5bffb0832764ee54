package domain_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

const (
	eventUnix    = 1795860000 // 2026-11-28T10:00:00Z
	signedUpUnix = 1795859998 // 2026-11-28T09:59:58Z
)

// mappingEvent is a decoded event with every source set.
func mappingEvent() domain.ReferrerJoined {
	return domain.ReferrerJoined{
		ID:           "evt-1",
		Source:       "/campaigns/camp_123",
		Time:         time.Unix(eventUnix, 0).UTC(),
		CampaignID:   "camp_123",
		CampaignName: "Spring launch",
		Referrer: domain.Referrer{
			ID:         "usr_8812",
			FirstName:  "Ada",
			Email:      "ada@example.com",
			Code:       "ADA-7Q2",
			URL:        "https://refer.example.com/ADA-7Q2",
			Source:     "Widget",
			SignedUpAt: time.Unix(signedUpUnix, 0).UTC(),
			Meta: map[string]string{
				"company": "Acme",
				"phone":   "+44 20 7946 0000",
				"owner":   "42",
				"opt_out": "true",
				"opt_in":  " FALSE ",
				"maybe":   "maybe",
				"photo":   "https://cdn.example.com/ada.png",
				"empty":   "",
				"email":   "Not An Email",
				"when":    "2026-01-01T00:00:00Z",
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func campaignOf(action domain.Action, fields ...domain.Field) domain.Campaign {
	return domain.Campaign{Connection: "intercom", Action: action, OnDuplicate: domain.OnDuplicateUpdate, Fields: fields}
}

func TestMapContact(t *testing.T) {
	emailField := domain.Field{From: domain.SourceReferrerEmail, To: domain.TargetEmail}
	tests := []struct {
		name     string
		campaign domain.Campaign
		event    func(*domain.ReferrerJoined) // optional change to mappingEvent
		want     domain.Contact
	}{
		{
			name: "every source and target",
			campaign: campaignOf(domain.ActionCreateUser,
				emailField,
				domain.Field{From: domain.SourceReferrerFirstName, To: domain.TargetName},
				domain.Field{From: "referrer.meta.phone", To: domain.TargetPhone},
				domain.Field{From: domain.SourceReferrerID, To: domain.TargetExternalID},
				domain.Field{From: "referrer.meta.photo", To: domain.TargetAvatar},
				domain.Field{From: domain.SourceReferrerSignedUpAt, To: domain.TargetSignedUpAt},
				domain.Field{From: domain.SourceEventTime, To: domain.TargetLastSeenAt},
				domain.Field{From: "referrer.meta.owner", To: domain.TargetOwnerID},
				domain.Field{From: "referrer.meta.opt_out", To: domain.TargetUnsubscribed},
				domain.Field{From: domain.SourceReferrerCode, To: "custom_attributes.referral_code"},
				domain.Field{From: domain.SourceReferrerURL, To: "custom_attributes.referral_link"},
				domain.Field{From: domain.SourceReferrerSource, To: "custom_attributes.referral_source"},
				domain.Field{From: domain.SourceCampaignID, To: "custom_attributes.campaign_id"},
				domain.Field{From: domain.SourceCampaignName, To: "custom_attributes.campaign_name"},
				domain.Field{From: domain.SourceEventID, To: "custom_attributes.event_id"},
				domain.Field{From: domain.SourceEventTime, To: "custom_attributes.joined_at"},
				domain.Field{From: domain.SourceReferrerSignedUpAt, To: "custom_attributes.signed_up"},
				domain.Field{From: "referrer.meta.company", To: "custom_attributes.company"},
				domain.Field{From: domain.SourceReferrerEmail, To: "custom_attributes.login"},
			),
			want: domain.Contact{
				Role:         domain.RoleUser,
				Email:        "ada@example.com",
				ExternalID:   "usr_8812",
				Name:         "Ada",
				Phone:        "+44 20 7946 0000",
				Avatar:       "https://cdn.example.com/ada.png",
				OwnerID:      "42",
				SignedUpAt:   signedUpUnix,
				LastSeenAt:   eventUnix,
				Unsubscribed: ptr(true),
				Custom: map[string]any{
					"referral_code":   "ADA-7Q2",
					"referral_link":   "https://refer.example.com/ADA-7Q2",
					"referral_source": "Widget",
					"campaign_id":     "camp_123",
					"campaign_name":   "Spring launch",
					"event_id":        "evt-1",
					"joined_at":       int64(eventUnix),
					"signed_up":       int64(signedUpUnix),
					"company":         "Acme",
					"login":           "ada@example.com",
				},
			},
		},
		{
			name:     "lead",
			campaign: campaignOf(domain.ActionCreateLead, emailField),
			want:     domain.Contact{Role: domain.RoleLead, Email: "ada@example.com"},
		},
		{
			name:     "action nothing has no role",
			campaign: campaignOf(domain.ActionNothing, emailField),
			want:     domain.Contact{Email: "ada@example.com"},
		},
		{
			name: "fixed values",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{Value: "Referral programme", To: domain.TargetName},
				domain.Field{Value: 1234, To: domain.TargetOwnerID},
				domain.Field{Value: true, To: domain.TargetAvatar},
				domain.Field{Value: "spring", To: "custom_attributes.s"},
				domain.Field{Value: true, To: "custom_attributes.b"},
				domain.Field{Value: 7, To: "custom_attributes.i"},
				domain.Field{Value: int64(8), To: "custom_attributes.i64"},
				domain.Field{Value: 2.5, To: "custom_attributes.f"},
			),
			want: domain.Contact{
				Role: domain.RoleLead, Email: "ada@example.com",
				Name: "Referral programme", OwnerID: "1234", Avatar: "true",
				Custom: map[string]any{"s": "spring", "b": true, "i": int64(7), "i64": int64(8), "f": 2.5},
			},
		},
		{
			name: "fixed times",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{Value: "2026-01-01T00:00:00Z", To: domain.TargetSignedUpAt},
				domain.Field{Value: 1767225600, To: domain.TargetLastSeenAt},
			),
			want: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", SignedUpAt: 1767225600, LastSeenAt: 1767225600},
		},
		{
			name: "fixed times with an offset and as int64",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{Value: "2026-01-01T01:00:00+01:00", To: domain.TargetSignedUpAt},
				domain.Field{Value: int64(1767225600), To: domain.TargetLastSeenAt},
			),
			want: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", SignedUpAt: 1767225600, LastSeenAt: 1767225600},
		},
		{
			name: "fixed booleans",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{Value: false, To: domain.TargetUnsubscribed},
			),
			want: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", Unsubscribed: ptr(false)},
		},
		{
			name: "boolean text from meta is trimmed and case-insensitive",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{From: "referrer.meta.opt_in", To: domain.TargetUnsubscribed},
			),
			want: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", Unsubscribed: ptr(false)},
		},
		{
			name: "fixed boolean text",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{Value: "true", To: domain.TargetUnsubscribed},
			),
			want: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", Unsubscribed: ptr(true)},
		},
		{
			name: "times into text fields become Unix seconds",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{From: domain.SourceEventTime, To: domain.TargetName},
			),
			want: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com", Name: "1795860000"},
		},
		{
			name: "empty sources leave fields unmapped",
			campaign: campaignOf(domain.ActionCreateUser,
				emailField,
				domain.Field{From: domain.SourceReferrerFirstName, To: domain.TargetName},
				domain.Field{From: domain.SourceReferrerID, To: domain.TargetExternalID},
				domain.Field{From: domain.SourceReferrerSignedUpAt, To: domain.TargetSignedUpAt},
				domain.Field{From: domain.SourceEventTime, To: domain.TargetLastSeenAt},
				domain.Field{From: "referrer.meta.empty", To: domain.TargetUnsubscribed},
				domain.Field{From: "referrer.meta.absent", To: domain.TargetPhone},
				domain.Field{From: domain.SourceReferrerCode, To: "custom_attributes.code"},
				domain.Field{From: domain.SourceReferrerURL, To: "custom_attributes.link"},
				domain.Field{From: domain.SourceReferrerSource, To: "custom_attributes.source"},
				domain.Field{From: domain.SourceCampaignName, To: "custom_attributes.campaign"},
				domain.Field{From: domain.SourceEventTime, To: "custom_attributes.joined_at"},
			),
			event: func(ev *domain.ReferrerJoined) {
				ev.Time = time.Time{}
				ev.CampaignName = ""
				ev.Referrer = domain.Referrer{Email: ev.Referrer.Email, Meta: map[string]string{"empty": ""}}
			},
			want: domain.Contact{Role: domain.RoleUser, Email: "ada@example.com"},
		},
		{
			name: "no meta at all",
			campaign: campaignOf(domain.ActionCreateLead,
				emailField,
				domain.Field{From: "referrer.meta.phone", To: domain.TargetPhone},
			),
			event: func(ev *domain.ReferrerJoined) { ev.Referrer.Meta = nil },
			want:  domain.Contact{Role: domain.RoleLead, Email: "ada@example.com"},
		},
		{
			name:     "no fields",
			campaign: campaignOf(domain.ActionCreateLead),
			want:     domain.Contact{Role: domain.RoleLead},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mappingEvent()
			if tt.event != nil {
				tt.event(&ev)
			}
			got, err := domain.MapContact(tt.campaign, ev)
			if err != nil {
				t.Fatalf("MapContact: got error %v, want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MapContact:\n got %s\nwant %s", describe(got), describe(tt.want))
			}
		})
	}
}

// describe prints a contact with the pointed-to boolean and the dynamic
// types of custom values, which %+v hides.
func describe(c domain.Contact) string {
	unsub := "nil"
	if c.Unsubscribed != nil {
		unsub = fmt.Sprint(*c.Unsubscribed)
	}
	var custom []string
	for k, v := range c.Custom {
		custom = append(custom, fmt.Sprintf("%s=%T(%v)", k, v, v))
	}
	slices.Sort(custom)
	c.Unsubscribed, c.Custom = nil, nil
	return fmt.Sprintf("%+v Unsubscribed=%s Custom=%v", c, unsub, custom)
}

func TestMapContactErrors(t *testing.T) {
	emailField := domain.Field{From: domain.SourceReferrerEmail, To: domain.TargetEmail}
	tests := []struct {
		name  string
		field domain.Field
	}{
		{name: "meta that is not a boolean", field: domain.Field{From: "referrer.meta.maybe", To: domain.TargetUnsubscribed}},
		{name: "meta that is not an email", field: domain.Field{From: "referrer.meta.email", To: domain.TargetEmail}},
		{name: "text that is not a time", field: domain.Field{From: domain.SourceReferrerCode, To: domain.TargetSignedUpAt}},
		{name: "fixed text that is not a time", field: domain.Field{Value: "tomorrow", To: domain.TargetLastSeenAt}},
		{name: "fixed float as a time", field: domain.Field{Value: 1.5, To: domain.TargetSignedUpAt}},
		{name: "time as a boolean", field: domain.Field{From: domain.SourceEventTime, To: domain.TargetUnsubscribed}},
		{name: "fixed number as a boolean", field: domain.Field{Value: 1, To: domain.TargetUnsubscribed}},
		{name: "unknown source", field: domain.Field{From: "referrer.nickname", To: domain.TargetName}},
		{name: "unknown target", field: domain.Field{From: domain.SourceReferrerCode, To: "nickname"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := domain.MapContact(campaignOf(domain.ActionCreateLead, emailField, tt.field), mappingEvent())
			if err == nil {
				t.Fatalf("MapContact: got %+v and no error, want a mapping error", got)
			}
			if r := reasonOf(t, err); r != domain.ReasonMapping {
				t.Errorf("reason: got %s, want %s (error: %v)", r, domain.ReasonMapping, err)
			}
			if !strings.Contains(err.Error(), tt.field.To+":") {
				t.Errorf("error: got %q, want it to name the target %q", err, tt.field.To)
			}
			if !reflect.DeepEqual(got, domain.Contact{}) {
				t.Errorf("contact on error: got %+v, want the zero value", got)
			}
		})
	}
}
