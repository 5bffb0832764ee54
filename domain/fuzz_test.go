package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/domain"
)

var knownReasons = map[string]bool{
	domain.ReasonTooLarge:        true,
	domain.ReasonMalformed:       true,
	domain.ReasonWrongType:       true,
	domain.ReasonMissingID:       true,
	domain.ReasonMissingCampaign: true,
	domain.ReasonMissingEmail:    true,
	domain.ReasonInvalidEmail:    true,
}

// FuzzDecodeEvent feeds DecodeEvent arbitrary bodies, in structured mode or
// in binary mode with arbitrary attributes. DecodeEvent must never panic,
// must fail only with an *InvalidEventError naming a known reason, and must
// only ever hand on an event the rest of the service can rely on.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(exampleEvent), false, "", "", "")
	f.Add([]byte(exampleData), true, "9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11", domain.EventType, "application/json")
	f.Add([]byte(exampleData), true, " ", domain.EventType, "")
	f.Add([]byte(exampleEvent[:len(exampleEvent)/2]), false, "", "", "")
	f.Add([]byte(exampleData[:len(exampleData)-3]), true, "x", domain.EventType, "application/json")
	f.Add([]byte(exampleEvent+strings.Repeat(" ", domain.MaxEventSize)), false, "", "", "")
	f.Add([]byte(structured(`"id":"9b1c1a5e-2f7d-4c1e-9a57-0f1f6b1d2e11"`, `"id":42`)), false, "", "", "")
	f.Add([]byte(structured(`"campaign_id":"camp_123"`, `"campaign_id":["camp_123"]`)), false, "", "", "")
	f.Add([]byte(structured(`"email":"Ada@Example.com"`, `"email":7`)), false, "", "", "")
	f.Add([]byte(structured(`"company":"Acme"`, `"company":{"a":[1,null]},"n":null,"b":true,"f":-1.5e3`)), false, "", "", "")
	f.Add([]byte(structured(`"type":"referrer.joined"`, `"type":"referrer.left"`)), false, "", "", "")
	f.Add([]byte(structured(`"email":"Ada@Example.com"`, `"email":" \u00c5sa@Example.COM\u00a0"`)), false, "", "", "")
	f.Add([]byte(`{"specversion":"1.0","id":"x","type":"referrer.joined","data":"{}"}`), false, "", "", "")
	f.Add([]byte(`null`), false, "", "", "")
	f.Add([]byte(``), true, "", "", "")

	f.Fuzz(func(t *testing.T, body []byte, binary bool, ceID, ceType, contentType string) {
		var headers map[string]string
		if binary {
			headers = map[string]string{"ce-specversion": "1.0", "ce-id": ceID, "ce-type": ceType, "content-type": contentType}
		}
		ev, err := domain.DecodeEvent(body, headers)
		if err != nil {
			var inv *domain.InvalidEventError
			if !errors.As(err, &inv) {
				t.Fatalf("error: got %T (%v), want *domain.InvalidEventError", err, err)
			}
			if !knownReasons[inv.Reason] {
				t.Fatalf("reason: got %q, want one of the Reason constants", inv.Reason)
			}
			if len(body) > domain.MaxEventSize && inv.Reason != domain.ReasonTooLarge {
				t.Fatalf("reason for %d bytes: got %q, want %q", len(body), inv.Reason, domain.ReasonTooLarge)
			}
			return
		}
		if len(body) > domain.MaxEventSize {
			t.Fatalf("accepted %d bytes, more than MaxEventSize", len(body))
		}
		if ev.ID == "" {
			t.Fatal("accepted an event with an empty ID")
		}
		if ev.CampaignID == "" {
			t.Fatal("accepted an event with an empty CampaignID")
		}
		email, err := domain.NormalizeEmail(ev.Referrer.Email)
		if err != nil || email != ev.Referrer.Email {
			t.Fatalf("NormalizeEmail(%q): got %q, %v, want it unchanged", ev.Referrer.Email, email, err)
		}
	})
}
