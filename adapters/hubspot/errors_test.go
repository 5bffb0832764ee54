package hubspot

import (
	"net/http"
	"strings"
	"testing"
)

func TestConflictID(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		wantID string
	}{
		{"documented", `{"status":"error","message":"Contact already exists. Existing ID: 37765128953","correlationId":"2dea5219-07f2-40ce-82ec-9c2e302317a4","category":"CONFLICT"}`, "37765128953"},
		{"no space", `{"message":"Contact already exists. Existing ID:42","category":"CONFLICT"}`, "42"},
		{"no category", `{"message":"Contact already exists. Existing ID: 42"}`, "42"},
		{"other category", `{"message":"Existing ID: 42","category":"VALIDATION_ERROR"}`, ""},
		{"no id", `{"message":"Contact already exists.","category":"CONFLICT"}`, ""},
		{"not a number", `{"message":"Existing ID: abc","category":"CONFLICT"}`, ""},
		{"html", `<html>409</html>`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := conflictID(parseErrorBody(http.Header{}, []byte(tt.body), func(s string) string { return s }))
			if id != tt.wantID || ok != (tt.wantID != "") {
				t.Errorf("conflictID = %q, %v; want %q", id, ok, tt.wantID)
			}
		})
	}
}

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		name                            string
		header                          http.Header
		body                            string
		wantCategory, wantPolicy, wantM string
		wantDetail                      string // substring
	}{
		{"validation items summarised without values", nil,
			`{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address bob@x is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"},{\"isValid\":false,\"message\":\"Property \\\"zz\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"zz\"}]","category":"VALIDATION_ERROR"}`,
			"VALIDATION_ERROR", "", "Property values were not valid: INVALID_EMAIL email, PROPERTY_DOESNT_EXIST zz", ""},
		{"rate limit", nil, `{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}`,
			"RATE_LIMIT", "DAILY", "You have reached your daily limit.", ""},
		{"fields of the wrong type", nil, `{"message":42,"category":["x"]}`, "", "", "", "unexpected error body"},
		{"html", http.Header{"Content-Type": {"text/html; charset=utf-8"}}, "<html>\n<h1>502</h1></html>", "", "", "", `(text/html, 26 bytes): "<html> <h1>502</h1></html>"`},
		{"empty", nil, "", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			b := parseErrorBody(h, []byte(tt.body), func(s string) string { return s })
			if b.category != tt.wantCategory || b.policy != tt.wantPolicy || b.message != tt.wantM {
				t.Errorf("= %+v; want category %q policy %q message %q", b, tt.wantCategory, tt.wantPolicy, tt.wantM)
			}
			if !strings.Contains(b.detail, tt.wantDetail) || (tt.wantDetail == "" && b.detail != "") {
				t.Errorf("detail = %q, want %q", b.detail, tt.wantDetail)
			}
		})
	}
}
