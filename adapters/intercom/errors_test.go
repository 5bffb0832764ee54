package intercom

import (
	"net/http"
	"strings"
	"testing"
)

func TestConflictID(t *testing.T) {
	tests := []struct {
		name         string
		items        []errItem
		wantID       string
		wantArchived bool
		wantOK       bool
	}{
		{"conflict", []errItem{{Code: "conflict", Message: "A contact matching those details already exists with id=6762f0dd1bb69f9f2193bb83"}},
			"6762f0dd1bb69f9f2193bb83", false, true},
		{"archived", []errItem{{Code: "conflict", Message: "An archived contact matching those details already exists with id=6762f0dd1bb69f9f2193bb84"}},
			"6762f0dd1bb69f9f2193bb84", true, true},
		{"unique_user_constraint", []errItem{{Code: "unique_user_constraint", Message: "User already exists with id=0123456789abcdef01234567."}},
			"0123456789abcdef01234567", false, true},
		{"id in second item", []errItem{{Code: "conflict", Message: "no id here"}, {Code: "conflict", Message: "id=aaaaaaaaaaaaaaaaaaaaaaaa"}},
			"aaaaaaaaaaaaaaaaaaaaaaaa", false, true},
		{"legacy message without id", []errItem{{Code: "conflict", Message: "Multiple existing users match this email address - must be more specific using user_id"}},
			"", false, false},
		{"other code", []errItem{{Code: "resource_conflict", Message: "exists with id=6762f0dd1bb69f9f2193bb83"}}, "", false, false},
		{"too short", []errItem{{Code: "conflict", Message: "id=6762f0dd1bb69f9f2193bb8"}}, "", false, false},
		{"too long", []errItem{{Code: "conflict", Message: "id=6762f0dd1bb69f9f2193bb83a"}}, "", false, false},
		{"uppercase hex", []errItem{{Code: "conflict", Message: "id=6762F0DD1BB69F9F2193BB83"}}, "", false, false},
		{"not a word boundary", []errItem{{Code: "conflict", Message: "uuid=6762f0dd1bb69f9f2193bb83"}}, "", false, false},
		{"none", nil, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, archived, ok := conflictID(tt.items)
			if id != tt.wantID || archived != tt.wantArchived || ok != tt.wantOK {
				t.Errorf("conflictID() = %q, %v, %v; want %q, %v, %v", id, archived, ok, tt.wantID, tt.wantArchived, tt.wantOK)
			}
		})
	}
}

func TestParseErrorBody(t *testing.T) {
	jsonH := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	htmlH := http.Header{"Content-Type": {"text/html"}}
	noScrub := func(s string) string { return s }
	tests := []struct {
		name        string
		header      http.Header
		body        string
		wantCode    string
		wantMessage string
		wantDetail  string // substring
	}{
		{"envelope", jsonH, `{"type":"error.list","request_id":"x","errors":[{"code":"parameter_invalid","message":"Custom attribute 'x' does not exist"}]}`,
			"parameter_invalid", "Custom attribute 'x' does not exist", ""},
		{"null message", jsonH, `{"type":"error.list","errors":[{"code":"not_found","message":null}]}`, "not_found", "", ""},
		{"several errors", jsonH, `{"type":"error.list","errors":[{"code":"a","message":"one"},{"code":"b","message":"two"}]}`, "a", "one; two", ""},
		{"code of the wrong type", jsonH, `{"type":"error.list","errors":[{"code":42,"message":"m"}]}`, "", "m", ""},
		{"control characters", jsonH, `{"type":"error.list","errors":[{"code":"c","message":"line1\nline2\u0000"}]}`, "c", "line1 line2", ""},
		{"html", htmlH, `<html><body>502 Bad Gateway</body></html>`, "", "", "text/html"},
		{"json but not an envelope", jsonH, `{"message":"nope"}`, "", "", "nope"},
		{"empty", jsonH, ``, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrorBody(tt.header, []byte(tt.body), noScrub)
			if got.code != tt.wantCode || got.message != tt.wantMessage {
				t.Errorf("parseErrorBody() code %q message %q, want %q %q", got.code, got.message, tt.wantCode, tt.wantMessage)
			}
			if tt.wantDetail == "" && got.detail != "" || !strings.Contains(got.detail, tt.wantDetail) {
				t.Errorf("parseErrorBody() detail %q, want it to contain %q", got.detail, tt.wantDetail)
			}
		})
	}
	t.Run("long message is cut after scrubbing", func(t *testing.T) {
		secret := strings.Repeat("s", 40)
		body := `<p>` + strings.Repeat("x", maxSnippetLen-20) + secret + `</p>`
		got := parseErrorBody(htmlH, []byte(body), func(s string) string { return strings.ReplaceAll(s, secret, "[redacted]") })
		if strings.Contains(got.detail, "ssssssssss") {
			t.Errorf("detail %q contains part of the secret", got.detail)
		}
	})
}

func TestCanonicalID(t *testing.T) {
	tests := []struct {
		link, want string
		ok         bool
	}{
		{`</contacts/6762f0dd1bb69f9f2193bb99>; rel="canonical"`, "6762f0dd1bb69f9f2193bb99", true},
		{`<https://api.intercom.io/contacts/abc>; rel=canonical`, "abc", true},
		{`</contacts/abc>; rel="next"`, "", false},
		{``, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.link, func(t *testing.T) {
			h := http.Header{}
			if tt.link != "" {
				h.Set("Link", tt.link)
			}
			got, ok := canonicalID(h)
			if got != tt.want || ok != tt.ok {
				t.Errorf("canonicalID(%q) = %q, %v; want %q, %v", tt.link, got, ok, tt.want, tt.ok)
			}
		})
	}
}
