package intercom

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
	maxErrorItems = 3
)

// errorBody is what could be read from an error response.
type errorBody struct {
	code    string    // first error's code
	message string    // messages of the first few errors, joined
	items   []errItem // all items, for the 409 parser
	detail  string    // set when the body is not Intercom's envelope
}

type errItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

// parseErrorBody reads Intercom's error envelope,
// {"type":"error.list","errors":[{"code","message","field"}]}, defensively:
// any field may be missing, null or of another type, and proxies in front
// of Intercom answer with HTML or plain text. scrub is applied to all text
// before it is shortened, so a truncation cannot leave part of a secret.
func parseErrorBody(h http.Header, body []byte, scrub func(string) string) errorBody {
	var env struct {
		Type   string            `json:"type"`
		Errors []json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 {
		if len(body) == 0 {
			return errorBody{}
		}
		ct := h.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			ct = mt
		}
		return errorBody{detail: fmt.Sprintf("unexpected error body (%s, %d bytes): %q", ct, len(body), clean(scrub(string(body)), maxSnippetLen))}
	}
	var out errorBody
	var msgs []string
	for _, raw := range env.Errors {
		var it errItem
		// A malformed item (code as a number, say) leaves the fields that
		// did decode; json.Unmarshal keeps going past type mismatches.
		_ = json.Unmarshal(raw, &it)
		it.Code = clean(scrub(it.Code), 100)
		it.Message = clean(scrub(it.Message), maxMessageLen)
		out.items = append(out.items, it)
		if out.code == "" {
			out.code = it.Code
		}
		if it.Message != "" && len(msgs) < maxErrorItems {
			msgs = append(msgs, it.Message)
		}
	}
	out.message = strings.Join(msgs, "; ")
	return out
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

// conflictIDPattern finds the existing contact's id in a 409 message such
// as "A contact matching those details already exists with id=6762f0dd1bb69f9f2193bb83"
// or "An archived contact matching those details already exists with id=...".
// Intercom puts the id only there; no structured field carries it.
var conflictIDPattern = regexp.MustCompile(`\bid=([0-9a-f]{24})(?:[^0-9a-zA-Z]|$)`)

// conflictCodes are the 409 codes that mean "a matching contact exists";
// the official Ruby SDK maps the same two to MultipleMatchingUsersError.
var conflictCodes = map[string]bool{"conflict": true, "unique_user_constraint": true}

// conflictID returns the id of the existing contact named by a 409 answer to
// POST /contacts, and whether that contact is archived.
func conflictID(items []errItem) (id string, archived, ok bool) {
	for _, it := range items {
		if !conflictCodes[it.Code] {
			continue
		}
		if m := conflictIDPattern.FindStringSubmatch(it.Message); m != nil {
			return m[1], strings.Contains(strings.ToLower(it.Message), "archived"), true
		}
	}
	return "", false, false
}
