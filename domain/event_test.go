package domain_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// exampleEvent is the event contract's example, verbatim.
const exampleEvent = `{"specversion":"1.0","id":"9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11","source":"/campaigns/camp_123","type":"referrer.joined",
 "time":"2026-11-28T10:00:00Z","datacontenttype":"application/json",
 "data":{"campaign_id":"camp_123","campaign_name":"Spring launch",
   "referrer":{"id":"usr_8812","first_name":"Ada","email":"Ada@Example.com","code":"ADA-7Q2",
     "url":"https://refer.example.com/ADA-7Q2","source":"Widget","signed_up_at":"2026-11-28T09:59:58Z",
     "meta":{"company":"Acme","phone":"+44 20 7946 0000"}}}}`

// exampleData is the data of exampleEvent, as a binary-mode body.
const exampleData = `{"campaign_id":"camp_123","campaign_name":"Spring launch",
   "referrer":{"id":"usr_8812","first_name":"Ada","email":"Ada@Example.com","code":"ADA-7Q2",
     "url":"https://refer.example.com/ADA-7Q2","source":"Widget","signed_up_at":"2026-11-28T09:59:58Z",
     "meta":{"company":"Acme","phone":"+44 20 7946 0000"}}}`

func binaryHeaders() map[string]string {
	return map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          "9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11",
		"ce-source":      "/campaigns/camp_123",
		"ce-type":        "referrer.joined",
		"ce-time":        "2026-11-28T10:00:00Z",
		"content-type":   "application/json",
	}
}

func withHeader(k, v string) map[string]string {
	h := binaryHeaders()
	if v == "" {
		delete(h, k)
	} else {
		h[k] = v
	}
	return h
}

// wantExample is exampleEvent decoded.
func wantExample() domain.ReferrerJoined {
	return domain.ReferrerJoined{
		ID:           "9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11",
		Source:       "/campaigns/camp_123",
		Time:         time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
		CampaignID:   "camp_123",
		CampaignName: "Spring launch",
		Referrer: domain.Referrer{
			ID:         "usr_8812",
			FirstName:  "Ada",
			Email:      "ada@example.com",
			Code:       "ADA-7Q2",
			URL:        "https://refer.example.com/ADA-7Q2",
			Source:     "Widget",
			SignedUpAt: time.Date(2026, 11, 28, 9, 59, 58, 0, time.UTC),
			Meta:       map[string]string{"company": "Acme", "phone": "+44 20 7946 0000"},
		},
	}
}

// structured builds a structured-mode event from the example with one data
// fragment replaced, keeping the test cases short.
func structured(old, replacement string) string {
	if !strings.Contains(exampleEvent, old) {
		panic("structured: fragment not found: " + old)
	}
	return strings.Replace(exampleEvent, old, replacement, 1)
}

// equalEvent compares events with time.Time.Equal, so that only the instant
// and its location (UTC) matter, not time.Time's internal representation.
func equalEvent(t *testing.T, got, want domain.ReferrerJoined) {
	t.Helper()
	if !got.Time.Equal(want.Time) || got.Time.Location() != want.Time.Location() {
		t.Errorf("Time: got %v, want %v", got.Time, want.Time)
	}
	if !got.Referrer.SignedUpAt.Equal(want.Referrer.SignedUpAt) || got.Referrer.SignedUpAt.Location() != want.Referrer.SignedUpAt.Location() {
		t.Errorf("Referrer.SignedUpAt: got %v, want %v", got.Referrer.SignedUpAt, want.Referrer.SignedUpAt)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	got.Referrer.SignedUpAt, want.Referrer.SignedUpAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event:\n got %+v\nwant %+v", got, want)
	}
}

// reasonOf returns the Reason of an *InvalidEventError, failing the test for
// any other error.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	var inv *domain.InvalidEventError
	if !errors.As(err, &inv) {
		t.Fatalf("error %v (%T) is not a *domain.InvalidEventError", err, err)
	}
	return inv.Reason
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		want    func() domain.ReferrerJoined
	}{
		{name: "structured example", body: exampleEvent, want: wantExample},
		{name: "binary example", body: exampleData, headers: binaryHeaders(), want: wantExample},
		{
			name: "binary without content-type", body: exampleData, headers: withHeader("content-type", ""),
			want: wantExample,
		},
		{
			name: "binary with charset parameter", body: exampleData,
			headers: withHeader("content-type", "application/json; charset=utf-8"), want: wantExample,
		},
		{
			name: "structured without datacontenttype",
			body: structured(`"datacontenttype":"application/json",`, ``), want: wantExample,
		},
		{
			name: "email trimmed and lower-cased",
			body: structured(`"email":"Ada@Example.com"`, `"email":"  ADA@EXAMPLE.COM \t"`), want: wantExample,
		},
		{
			name: "id trimmed",
			body: structured(`"id":"9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11"`, `"id":" 9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11 "`),
			want: wantExample,
		},
		{
			name: "campaign id trimmed",
			body: structured(`"campaign_id":"camp_123"`, `"campaign_id":" camp_123\n"`), want: wantExample,
		},
		{
			name: "times with offsets become UTC",
			body: structured(`"time":"2026-11-28T10:00:00Z"`, `"time":"2026-11-28T11:00:00+01:00"`),
			want: wantExample,
		},
		{
			name: "fractional seconds kept",
			body: structured(`"time":"2026-11-28T10:00:00Z"`, `"time":"2026-11-28T10:00:00.25Z"`),
			want: func() domain.ReferrerJoined {
				ev := wantExample()
				ev.Time = ev.Time.Add(250 * time.Millisecond)
				return ev
			},
		},
		{
			name: "no times",
			body: structured(`"time":"2026-11-28T10:00:00Z",`, ``),
			want: func() domain.ReferrerJoined {
				ev := wantExample()
				ev.Time = time.Time{}
				return ev
			},
		},
		{
			name: "no signed_up_at",
			body: structured(`,"signed_up_at":"2026-11-28T09:59:58Z"`, ``),
			want: func() domain.ReferrerJoined {
				ev := wantExample()
				ev.Referrer.SignedUpAt = time.Time{}
				return ev
			},
		},
		{
			name: "meta numbers booleans and null become strings",
			body: structured(`"meta":{"company":"Acme","phone":"+44 20 7946 0000"}`,
				`"meta":{"seats":42,"ratio":1.5,"vip":true,"opt_out":false,"gone":null,"quoted":"x\"y"}`),
			want: func() domain.ReferrerJoined {
				ev := wantExample()
				ev.Referrer.Meta = map[string]string{"seats": "42", "ratio": "1.5", "vip": "true", "opt_out": "false", "gone": "", "quoted": `x"y`}
				return ev
			},
		},
		{
			name: "no meta",
			body: structured(`,
     "meta":{"company":"Acme","phone":"+44 20 7946 0000"}`, ``),
			want: func() domain.ReferrerJoined {
				ev := wantExample()
				ev.Referrer.Meta = nil
				return ev
			},
		},
		{
			name: "unknown attributes and fields ignored",
			body: structured(`"specversion":"1.0",`, `"specversion":"1.0","subject":"x","extension":{"a":1},`),
			want: wantExample,
		},
		{
			name: "exactly MaxEventSize bytes accepted",
			body: exampleEvent + strings.Repeat(" ", domain.MaxEventSize-len(exampleEvent)),
			want: wantExample,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := domain.DecodeEvent([]byte(tt.body), tt.headers)
			if err != nil {
				t.Fatalf("DecodeEvent: got error %v, want none", err)
			}
			equalEvent(t, got, tt.want())
		})
	}
}

func TestDecodeEventInvalid(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		want    string
	}{
		{name: "empty body", body: ``, want: domain.ReasonMalformed},
		{name: "truncated JSON", body: exampleEvent[:len(exampleEvent)/2], want: domain.ReasonMalformed},
		{name: "not an object", body: `[1,2,3]`, want: domain.ReasonMalformed},
		{name: "JSON null", body: `null`, want: domain.ReasonMalformed},
		{name: "too large", body: exampleEvent + strings.Repeat(" ", domain.MaxEventSize-len(exampleEvent)+1), want: domain.ReasonTooLarge},
		{name: "too large is checked before parsing", body: strings.Repeat("{", domain.MaxEventSize+1), want: domain.ReasonTooLarge},
		{name: "missing specversion", body: structured(`"specversion":"1.0",`, ``), want: domain.ReasonMalformed},
		{name: "specversion 0.3", body: structured(`"specversion":"1.0"`, `"specversion":"0.3"`), want: domain.ReasonMalformed},
		{name: "id of the wrong JSON type", body: structured(`"id":"9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11"`, `"id":42`), want: domain.ReasonMalformed},
		{name: "wrong event type", body: structured(`"type":"referrer.joined"`, `"type":"referrer.left"`), want: domain.ReasonWrongType},
		{name: "missing event type", body: structured(`"type":"referrer.joined",`, ``), want: domain.ReasonWrongType},
		{name: "missing id", body: structured(`"id":"9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11",`, ``), want: domain.ReasonMissingID},
		{name: "blank id", body: structured(`"id":"9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11"`, `"id":"  "`), want: domain.ReasonMissingID},
		{name: "not JSON data", body: structured(`"datacontenttype":"application/json"`, `"datacontenttype":"text/xml"`), want: domain.ReasonMalformed},
		{name: "bad time", body: structured(`"time":"2026-11-28T10:00:00Z"`, `"time":"yesterday"`), want: domain.ReasonMalformed},
		{name: "missing data", body: `{"specversion":"1.0","id":"x","type":"referrer.joined"}`, want: domain.ReasonMalformed},
		{name: "null data", body: `{"specversion":"1.0","id":"x","type":"referrer.joined","data":null}`, want: domain.ReasonMalformed},
		{name: "string data", body: `{"specversion":"1.0","id":"x","type":"referrer.joined","data":"{}"}`, want: domain.ReasonMalformed},
		{name: "referrer of the wrong type", body: `{"specversion":"1.0","id":"x","type":"referrer.joined","data":{"campaign_id":"c","referrer":"ada@example.com"}}`, want: domain.ReasonMalformed},
		{name: "campaign_id of the wrong type", body: structured(`"campaign_id":"camp_123"`, `"campaign_id":123`), want: domain.ReasonMalformed},
		{name: "email of the wrong type", body: structured(`"email":"Ada@Example.com"`, `"email":["Ada@Example.com"]`), want: domain.ReasonMalformed},
		{name: "bad signed_up_at", body: structured(`"signed_up_at":"2026-11-28T09:59:58Z"`, `"signed_up_at":"28/11/2026"`), want: domain.ReasonMalformed},
		{name: "meta object value", body: structured(`"company":"Acme"`, `"company":{"name":"Acme"}`), want: domain.ReasonMalformed},
		{name: "meta array value", body: structured(`"company":"Acme"`, `"company":["Acme"]`), want: domain.ReasonMalformed},
		{name: "meta not an object", body: structured(`"meta":{"company":"Acme","phone":"+44 20 7946 0000"}`, `"meta":"Acme"`), want: domain.ReasonMalformed},
		{name: "missing campaign", body: structured(`"campaign_id":"camp_123",`, ``), want: domain.ReasonMissingCampaign},
		{name: "blank campaign", body: structured(`"campaign_id":"camp_123"`, `"campaign_id":"  "`), want: domain.ReasonMissingCampaign},
		{name: "missing email", body: structured(`"email":"Ada@Example.com",`, ``), want: domain.ReasonMissingEmail},
		{name: "blank email", body: structured(`"email":"Ada@Example.com"`, `"email":" \t "`), want: domain.ReasonMissingEmail},
		{name: "invalid email", body: structured(`"email":"Ada@Example.com"`, `"email":"Ada at Example.com"`), want: domain.ReasonInvalidEmail},
		{name: "email with display name", body: structured(`"email":"Ada@Example.com"`, `"email":"Ada <ada@example.com>"`), want: domain.ReasonInvalidEmail},

		{name: "binary too large", body: strings.Repeat(" ", domain.MaxEventSize+1), headers: binaryHeaders(), want: domain.ReasonTooLarge},
		{name: "binary wrong specversion", body: exampleData, headers: withHeader("ce-specversion", "0.3"), want: domain.ReasonMalformed},
		{name: "binary wrong type", body: exampleData, headers: withHeader("ce-type", "referrer.left"), want: domain.ReasonWrongType},
		{name: "binary missing type", body: exampleData, headers: withHeader("ce-type", ""), want: domain.ReasonWrongType},
		{name: "binary missing id", body: exampleData, headers: withHeader("ce-id", ""), want: domain.ReasonMissingID},
		{name: "binary bad time", body: exampleData, headers: withHeader("ce-time", "soon"), want: domain.ReasonMalformed},
		{name: "binary not JSON content", body: exampleData, headers: withHeader("content-type", "text/plain"), want: domain.ReasonMalformed},
		{name: "binary empty body", body: ``, headers: binaryHeaders(), want: domain.ReasonMalformed},
		{name: "binary truncated body", body: exampleData[:40], headers: binaryHeaders(), want: domain.ReasonMalformed},
		{name: "binary body is the envelope", body: exampleEvent, headers: binaryHeaders(), want: domain.ReasonMissingCampaign},
		{
			// Header names must be lower-case: capitalised ones are not
			// binary mode, so the body is read as an envelope.
			name: "capitalised headers are not binary mode", body: exampleData,
			headers: map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "x", "Ce-Type": "referrer.joined"},
			want:    domain.ReasonMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := domain.DecodeEvent([]byte(tt.body), tt.headers)
			if err == nil {
				t.Fatalf("DecodeEvent: got %+v and no error, want reason %s", got, tt.want)
			}
			if r := reasonOf(t, err); r != tt.want {
				t.Errorf("reason: got %s, want %s (error: %v)", r, tt.want, err)
			}
			if !reflect.DeepEqual(got, domain.ReferrerJoined{ID: got.ID, CampaignID: got.CampaignID}) {
				t.Errorf("event on error: got %+v, want at most the id and campaign id", got)
			}
		})
	}
}

// TestDecodeEventKeepsIdentityOnError pins that a rejected event still names
// itself, so its dead letter can be found by event id and campaign.
func TestDecodeEventKeepsIdentityOnError(t *testing.T) {
	const id = "9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11"
	tests := []struct {
		name, body   string
		headers      map[string]string
		wantID       string
		wantCampaign string
	}{
		{"invalid email", structured(`"email":"Ada@Example.com"`, `"email":"nope"`), nil, id, "camp_123"},
		{"missing email", structured(`"email":"Ada@Example.com",`, ``), nil, id, "camp_123"},
		{"wrong type", structured(`"type":"referrer.joined"`, `"type":"referrer.left"`), nil, id, "camp_123"},
		{"wrong specversion", structured(`"specversion":"1.0"`, `"specversion":"0.3"`), nil, id, "camp_123"},
		{"bad time", structured(`"time":"2026-11-28T10:00:00Z"`, `"time":"soon"`), nil, id, "camp_123"},
		{"bad datacontenttype", structured(`"datacontenttype":"application/json"`, `"datacontenttype":"text/plain"`), nil, id, "camp_123"},
		{"email of the wrong JSON type", structured(`"email":"Ada@Example.com"`, `"email":7`), nil, id, "camp_123"},
		{"meta object value", structured(`"company":"Acme"`, `"company":{"name":"Acme"}`), nil, id, "camp_123"},
		{"padded identifiers are trimmed", strings.Replace(structured(`"type":"referrer.joined"`, `"type":"x"`), `"camp_123"`, `" camp_123\t"`, 1), nil, id, "camp_123"},
		{"id of the wrong JSON type", structured(`"id":"`+id+`"`, `"id":42`), nil, "", "camp_123"},
		{"envelope attribute of the wrong JSON type", structured(`"source":"/campaigns/camp_123"`, `"source":7`), nil, id, "camp_123"},
		{"campaign of the wrong JSON type", structured(`"campaign_id":"camp_123"`, `"campaign_id":7`), nil, id, ""},
		{"missing id", structured(`"id":"`+id+`",`, ``), nil, "", "camp_123"},
		{"binary wrong type", exampleData, withHeader("ce-type", "referrer.left"), id, "camp_123"},
		{"binary not JSON content", exampleData, withHeader("content-type", "text/plain"), id, "camp_123"},
		{"binary invalid email", strings.Replace(exampleData, "Ada@Example.com", "nope", 1), binaryHeaders(), id, "camp_123"},
		{"binary too large keeps the header id", strings.Repeat(" ", domain.MaxEventSize+1), binaryHeaders(), id, ""},
		{"structured too large is not parsed", exampleEvent + strings.Repeat(" ", domain.MaxEventSize), nil, "", ""},
		{"not json", `{`, nil, "", ""},
		{"data not an object", `{"specversion":"1.0","id":"a","type":"referrer.joined","data":"{}"}`, nil, "a", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := domain.DecodeEvent([]byte(tt.body), tt.headers)
			if err == nil {
				t.Fatal("got no error")
			}
			if got.ID != tt.wantID || got.CampaignID != tt.wantCampaign {
				t.Errorf("got id %q campaign %q, want %q %q (error: %v)", got.ID, got.CampaignID, tt.wantID, tt.wantCampaign, err)
			}
		})
	}
}

// TestDecodeEventEmailNotLeaked pins that a rejected address does not travel
// into error text, which ends up in dead-letter headers and logs.
func TestDecodeEventEmailNotLeaked(t *testing.T) {
	for _, email := range []string{"ada@example", "Ada <ada@example.com>", "ada@@example.com"} {
		t.Run(email, func(t *testing.T) {
			_, err := domain.DecodeEvent([]byte(structured(`"email":"Ada@Example.com"`, `"email":"`+email+`"`)), nil)
			if err == nil {
				t.Fatal("DecodeEvent: got no error, want invalid_email")
			}
			if strings.Contains(err.Error(), "ada@") {
				t.Errorf("error text: got %q, want no address in it", err)
			}
		})
	}
}

func TestInvalidEventErrorMessage(t *testing.T) {
	tests := []struct {
		err  domain.InvalidEventError
		want string
	}{
		{domain.InvalidEventError{Reason: domain.ReasonMissingID}, "invalid event: missing_id"},
		{domain.InvalidEventError{Reason: domain.ReasonMalformed, Detail: "data: oops"}, "invalid event: malformed: data: oops"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error(): got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNormalizeEmail(t *testing.T) {
	tests := []struct {
		in         string
		want       string
		wantReason string // "" when in is valid
	}{
		{in: "ada@example.com", want: "ada@example.com"},
		{in: "Ada@Example.com", want: "ada@example.com"},
		{in: "  ADA@EXAMPLE.COM\t\r\n", want: "ada@example.com"},
		{in: "ada.lovelace+spring@mail.example.co.uk", want: "ada.lovelace+spring@mail.example.co.uk"},
		{in: "o'brien@example.ie", want: "o'brien@example.ie"},
		{in: "ÅSA@EXAMPLE.SE", want: "åsa@example.se"},
		{in: "\u00a0ada@example.com\u00a0", want: "ada@example.com"},
		{in: "", wantReason: domain.ReasonMissingEmail},
		{in: " \t\n ", wantReason: domain.ReasonMissingEmail},
		{in: "ada", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@", wantReason: domain.ReasonInvalidEmail},
		{in: "@example.com", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@example", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@localhost", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@.example.com", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@example.com.", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@example..com", wantReason: domain.ReasonInvalidEmail},
		{in: "ada..l@example.com", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@@example.com", wantReason: domain.ReasonInvalidEmail},
		{in: "a@b@example.com", wantReason: domain.ReasonInvalidEmail},
		{in: "ada lovelace@example.com", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@exa mple.com", wantReason: domain.ReasonInvalidEmail},
		{in: "Ada <ada@example.com>", wantReason: domain.ReasonInvalidEmail},
		{in: "<ada@example.com>", wantReason: domain.ReasonInvalidEmail},
		{in: `"ada"@example.com`, wantReason: domain.ReasonInvalidEmail},
		{in: "ada@example.com (Ada)", wantReason: domain.ReasonInvalidEmail},
		{in: "ada@example.com, bob@example.com", wantReason: domain.ReasonInvalidEmail},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := domain.NormalizeEmail(tt.in)
			if tt.wantReason != "" {
				if err == nil {
					t.Fatalf("NormalizeEmail(%q): got %q and no error, want reason %s", tt.in, got, tt.wantReason)
				}
				if r := reasonOf(t, err); r != tt.wantReason {
					t.Errorf("reason: got %s, want %s", r, tt.wantReason)
				}
				if got != "" {
					t.Errorf("address on error: got %q, want empty", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeEmail(%q): got error %v, want %q", tt.in, err, tt.want)
			}
			if got != tt.want {
				t.Errorf("NormalizeEmail(%q): got %q, want %q", tt.in, got, tt.want)
			}
			again, err := domain.NormalizeEmail(got)
			if err != nil || again != got {
				t.Errorf("NormalizeEmail(%q) again: got %q, %v, want %q, nil", got, again, err, got)
			}
		})
	}
}
