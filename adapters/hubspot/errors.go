package hubspot

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	maxMessageLen = 500
	maxSnippetLen = 200
	maxErrorItems = 5
)

// errorBody is what could be read from an error response.
type errorBody struct {
	category      string // category, or errorType for a 429
	policy        string // policyName of a 429: DAILY, or a shorter window
	message       string // a summary safe to log
	raw           string // the message as sent, for the 409 parser
	correlationID string
	detail        string // set when the body is not HubSpot's JSON error
}

// parseErrorBody reads HubSpot's error body,
// {"status":"error","message","correlationId","category","errors":[…]}
// (a 429 has errorType and policyName instead of category), defensively:
// HubSpot says every field should be treated as optional, and its load
// balancer answers some 5xx with HTML. scrub is applied before shortening.
func parseErrorBody(h http.Header, body []byte, scrub func(string) string) errorBody {
	var env struct {
		Message       any    `json:"message"`
		CorrelationID any    `json:"correlationId"`
		Category      any    `json:"category"`
		ErrorType     any    `json:"errorType"`
		PolicyName    any    `json:"policyName"`
		Errors        []any  `json:"errors"`
		Status        string `json:"status"`
	}
	unexpected := func() errorBody {
		if len(body) == 0 {
			return errorBody{}
		}
		ct := h.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			ct = mt
		}
		return errorBody{detail: fmt.Sprintf("unexpected error body (%s, %d bytes): %q", ct, len(body), clean(scrub(string(body)), maxSnippetLen))}
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return unexpected()
	}
	text := func(v any) string {
		s, _ := v.(string)
		return s
	}
	out := errorBody{
		category:      clean(scrub(text(env.Category)), 100),
		policy:        clean(scrub(text(env.PolicyName)), 100),
		raw:           clean(scrub(text(env.Message)), maxMessageLen),
		correlationID: clean(text(env.CorrelationID), 100),
	}
	if out.category == "" {
		out.category = clean(scrub(text(env.ErrorType)), 100)
	}
	if out.category == "" && out.raw == "" {
		return unexpected() // JSON, but not HubSpot's error
	}
	out.message = out.raw
	if items, ok := propertyErrors(out.raw); ok {
		// The embedded items can quote the values sent (an email, say):
		// keep only their codes and property names.
		out.message = "Property values were not valid: " + items
	}
	return out
}

// propertyErrorsPrefix starts the message of a 400 VALIDATION_ERROR about
// property values; a JSON array of items follows it.
const propertyErrorsPrefix = "Property values were not valid: "

// propertyErrors summarises the items of a "Property values were not
// valid: [...]" message as "CODE name, …".
func propertyErrors(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, propertyErrorsPrefix)
	if !ok {
		return "", false
	}
	var items []struct {
		Error string `json:"error"`
		Name  string `json:"name"`
	}
	if json.Unmarshal([]byte(rest), &items) != nil || len(items) == 0 {
		return "", false
	}
	var parts []string
	for _, it := range items {
		if len(parts) == maxErrorItems {
			parts = append(parts, fmt.Sprintf("and %d more", len(items)-maxErrorItems))
			break
		}
		parts = append(parts, strings.TrimSpace(clean(it.Error, 60)+" "+clean(it.Name, 100)))
	}
	return strings.Join(parts, ", "), true
}

// clean makes server text safe to embed in an error: valid UTF-8, no
// control characters, bounded length.
func clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// conflictIDPattern finds the existing contact's id in the message of a
// 409 answer to a create, "Contact already exists. Existing ID: 37765128953".
// HubSpot puts the id nowhere else.
var conflictIDPattern = regexp.MustCompile(`Existing ID:\s*([0-9]{1,20})\b`)

// conflictID returns the existing contact's id named by a 409.
func conflictID(b errorBody) (string, bool) {
	if b.category != "" && b.category != "CONFLICT" {
		return "", false
	}
	m := conflictIDPattern.FindStringSubmatch(b.raw)
	if m == nil {
		return "", false
	}
	return m[1], true
}
