package bench

import (
	"fmt"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// Campaign ids of the benchmark's catalog. The mix exercises every path a
// real backlog takes: new leads, new users with an external id, people
// already seen (duplicate + update, duplicate + skip), a campaign whose
// action is nothing, and duplicate deliveries of the same event.
const (
	campLeads    = "spring_launch" // create_lead, on duplicate: update
	campUsers    = "partners"      // create_user with external_id, on duplicate: skip
	campNothing  = "newsletter"    // nothing
	attrLink     = "referral_link"
	attrSource   = "lead_source"
	attrCompany  = "company"
	markerAttr   = "referrer_sync_event_id"
	eventSubject = "referrer.joined"
)

// catalog is the campaign settings every configuration runs with; conn
// names the CRM connection the creating campaigns write to.
func catalog(conn string) *domain.Catalog {
	return &domain.Catalog{Campaigns: map[string]domain.Campaign{
		campLeads: {Connection: conn, Action: domain.ActionCreateLead, OnDuplicate: domain.OnDuplicateUpdate, Fields: []domain.Field{
			{From: domain.SourceReferrerEmail, To: domain.TargetEmail},
			{From: domain.SourceReferrerFirstName, To: domain.TargetName},
			{From: domain.SourceReferrerURL, To: domain.TargetCustomPrefix + attrLink},
			{Value: "Referral Factory", To: domain.TargetCustomPrefix + attrSource},
			{From: domain.SourceMetaPrefix + "company", To: domain.TargetCustomPrefix + attrCompany},
		}},
		campUsers: {Connection: conn, Action: domain.ActionCreateUser, OnDuplicate: domain.OnDuplicateSkip, Fields: []domain.Field{
			{From: domain.SourceReferrerEmail, To: domain.TargetEmail},
			{From: domain.SourceReferrerID, To: domain.TargetExternalID},
			{From: domain.SourceReferrerFirstName, To: domain.TargetName},
			{From: domain.SourceReferrerSignedUpAt, To: domain.TargetSignedUpAt},
			{From: domain.SourceReferrerURL, To: domain.TargetCustomPrefix + attrLink},
		}},
		campNothing: {Action: domain.ActionNothing},
	}}
}

// Kind is what an event of the mix exercises.
type Kind int

// The kinds of event in the mix, with their share of every 20 events.
const (
	KindNewLead        Kind = iota // 11 of 20: a new person in the lead campaign
	KindNewUser                    // 5 of 20: a new person in the user campaign (external id)
	KindKnownUpdate                // 1 of 20: a person seen 5 events earlier, lead campaign (update)
	KindKnownSkip                  // 1 of 20: a person seen 17 events earlier, user campaign (skip)
	KindNothing                    // 1 of 20: the campaign whose action is nothing
	KindDuplicateEvent             // 1 of 20: the event 10 earlier, delivered again
)

func (k Kind) String() string {
	return [...]string{"new_lead", "new_user", "known_update", "known_skip", "nothing", "duplicate_event"}[k]
}

// kindOf returns the kind of event number i (from 0). The first 20 events
// are all new people, so every reference to an earlier event is valid.
func kindOf(i int) Kind {
	switch r := i % 20; {
	case r <= 10:
		return KindNewLead
	case r <= 15:
		return KindNewUser
	case i < 20:
		return KindNewLead
	case r == 16:
		return KindKnownUpdate // person of event i-5 (r=11: a user), now in the lead campaign
	case r == 17:
		return KindKnownSkip // person of event i-17 (r=0: a lead), now in the user campaign
	case r == 18:
		return KindNothing
	}
	return KindDuplicateEvent // event i-10 (r=9: a new lead) again
}

// eventBody returns event number i of the mix: a CloudEvents 1.0
// structured-mode body of the size and shape the referral platform sends
// (about 700 bytes). The same i always gives the same bytes, so every
// configuration consumes identical input.
func eventBody(i int) []byte {
	person, campaign, id := i, campLeads, i
	switch kindOf(i) {
	case KindNewLead:
	case KindNewUser:
		campaign = campUsers
	case KindKnownUpdate:
		person = i - 5
	case KindKnownSkip:
		person, campaign = i-17, campUsers
	case KindNothing:
		campaign = campNothing
	case KindDuplicateEvent:
		id, person = i-10, i-10
	}
	return render(id, person, campaign)
}

// render is the body of event id about person in campaign.
func render(id, person int, campaign string) []byte {
	t := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC).Add(time.Duration(id) * time.Millisecond)
	return fmt.Appendf(nil, `{"specversion":"1.0","id":"evt-%08d-6f1c-4b7e-9d2a","source":"/campaigns/%s","type":"referrer.joined",`+
		`"time":%q,"datacontenttype":"application/json",`+
		`"data":{"campaign_id":%q,"campaign_name":"Campaign %s","referrer":{"id":"usr_%08d","first_name":"Referrer %d",`+
		`"email":"Referrer.%08d@Example.com","code":"REF-%08X","url":"https://refer.example.com/r/REF-%08X",`+
		`"source":"Widget","signed_up_at":%q,"meta":{"company":"Company %d","phone":"+44 20 7946 %04d","plan":"growth","utm_source":"newsletter"}}}}`,
		id, campaign, t.Format(time.RFC3339Nano), campaign, campaign, person, person, person, person, person,
		t.Add(-2*time.Second).Format(time.RFC3339), person%997, person%10000)
}
