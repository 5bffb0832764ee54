package emulator_test

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var idPattern = regexp.MustCompile(`^[0-9]{11}$`)

func TestCreateUniqueByEmail(t *testing.T) {
	e := newEnv(t, defaultConfig())
	first := e.must(201, "POST", contacts, props("email", "Ada@Example.com", "firstname", "Ada", "lifecyclestage", "lead"))
	id := first.str("id")
	if !idPattern.MatchString(id) {
		t.Fatalf("id = %q, want decimal digits", id)
	}
	if got := first.prop("email"); got != "ada@example.com" {
		t.Errorf("email = %v, want it stored lower-cased", got)
	}
	if got := first.prop("hs_object_id"); got != id {
		t.Errorf("hs_object_id = %v, want %s", got, id)
	}

	tests := []struct {
		name  string
		email string
	}{{"same email", "ada@example.com"}, {"other case", "ADA@EXAMPLE.COM"}, {"surrounding space", " ada@example.com "}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", contacts, props("email", tt.email), tokA)
			want := "Contact already exists. Existing ID: " + id
			if r.status != 409 || r.str("category") != "CONFLICT" || r.str("message") != want || r.str("status") != "error" || r.str("correlationId") == "" {
				t.Errorf("duplicate create = %d %s, want 409 CONFLICT %q", r.status, r.body, want)
			}
		})
	}
	if n := len(e.srv.Contacts(tokA)); n != 1 {
		t.Errorf("contacts = %d, want 1", n)
	}
	// Another account has its own emails.
	if r := e.do("POST", contacts, props("email", "ada@example.com"), tokB); r.status != 201 {
		t.Errorf("create in another account = %d, want 201", r.status)
	}
	// Ids grow with creation.
	second := e.must(201, "POST", contacts, props("email", "bob@example.com"))
	if second.str("id") <= id {
		t.Errorf("second id %s is not above the first %s", second.str("id"), id)
	}
}

func TestCreateUniqueCustomProperty(t *testing.T) {
	e := newEnv(t, defaultConfig())
	e.must(201, "POST", contacts, props("email", "a@example.com", "member_id", "m-1"))
	r := e.do("POST", contacts, props("email", "b@example.com", "member_id", "M-1"), tokA)
	if r.status != 409 || r.str("category") != "CONFLICT" || strings.Contains(r.str("message"), "Existing ID") {
		t.Errorf("unique clash = %d %s, want 409 CONFLICT naming no id", r.status, r.body)
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t, defaultConfig())
	tests := []struct {
		name      string
		body      any
		wantCodes []string // in the embedded items, by property name order
		wantMsg   string   // substring, when there are no items
	}{
		{"unknown properties, all listed", props("email", "x@example.com", "zeta", "1", "alpha", "2"),
			[]string{"PROPERTY_DOESNT_EXIST alpha", "PROPERTY_DOESNT_EXIST zeta"}, ""},
		{"read-only", props("email", "x@example.com", "hs_object_id", "5"), []string{"READ_ONLY_VALUE hs_object_id"}, ""},
		{"not an option", props("email", "x@example.com", "lifecyclestage", "friend"), []string{"INVALID_OPTION lifecyclestage"}, ""},
		{"bad email", props("email", "not-an-email"), []string{"INVALID_EMAIL email"}, ""},
		{"no identifying property", props("phone", "+1 555"), nil, "At least one of email, firstname or lastname"},
		{"no properties", map[string]any{}, nil, "properties is required"},
		{"properties not an object", map[string]any{"properties": []string{"x"}}, nil, "properties must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", contacts, tt.body, tokA)
			if r.status != 400 || r.str("category") != "VALIDATION_ERROR" {
				t.Fatalf("status = %d %s, want 400 VALIDATION_ERROR", r.status, r.body)
			}
			msg := r.str("message")
			if tt.wantCodes == nil {
				if !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
				}
				return
			}
			rest, ok := strings.CutPrefix(msg, "Property values were not valid: ")
			if !ok {
				t.Fatalf("message = %q, want the property-values prefix", msg)
			}
			var items []struct{ Error, Name string }
			if err := jsonUnmarshal(rest, &items); err != nil {
				t.Fatalf("embedded items %q: %v", rest, err)
			}
			var got []string
			for _, it := range items {
				got = append(got, it.Error+" "+it.Name)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantCodes, ",") {
				t.Errorf("items = %v, want %v", got, tt.wantCodes)
			}
		})
	}
	if n := len(e.srv.Contacts(tokA)); n != 0 {
		t.Errorf("contacts = %d, want 0: refused creates must not apply", n)
	}
}

func TestGet(t *testing.T) {
	e := newEnv(t, defaultConfig())
	id := e.must(201, "POST", contacts, props("email", "ada@example.com", "firstname", "Ada", "member_id", "m-7", "referral_link", "https://r/x")).str("id")
	esc := url.PathEscape
	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantProps  map[string]any
	}{
		{"by id, default properties", contacts + "/" + id, 200,
			map[string]any{"email": "ada@example.com", "firstname": "Ada", "lastname": nil, "referral_link": "<absent>", "hs_object_id": id}},
		{"by email", contacts + "/" + esc("ada@example.com") + "?idProperty=email", 200, map[string]any{"email": "ada@example.com"}},
		{"by email, other case", contacts + "/" + esc("ADA@example.com") + "?idProperty=email", 200, map[string]any{"hs_object_id": id}},
		{"by unique property", contacts + "/m-7?idProperty=member_id&properties=referral_link", 200,
			map[string]any{"referral_link": "https://r/x", "email": "<absent>"}},
		{"properties repeated and comma-separated", contacts + "/" + id + "?properties=referral_link,lifecyclestage&properties=member_id&properties=nope", 200,
			map[string]any{"referral_link": "https://r/x", "lifecyclestage": nil, "member_id": "m-7", "nope": "<absent>"}},
		{"unknown id", contacts + "/999", 404, nil},
		{"unknown email", contacts + "/" + esc("bob@example.com") + "?idProperty=email", 404, nil},
		{"idProperty not unique", contacts + "/Ada?idProperty=firstname", 400, nil},
		{"idProperty unknown", contacts + "/x?idProperty=nope", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("GET", tt.path, nil, tokA)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d %s, want %d", r.status, r.body, tt.wantStatus)
			}
			if r.status == 404 && (r.str("category") != "OBJECT_NOT_FOUND" || r.str("message") != "Object not found.  objectId are usually numeric.") {
				t.Errorf("404 body = %s", r.body)
			}
			for k, want := range tt.wantProps {
				if got := r.prop(k); got != want {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	e := newEnv(t, defaultConfig())
	id := e.must(201, "POST", contacts, props("email", "ada@example.com", "firstname", "Ada", "lifecyclestage", "lead")).str("id")
	e.must(201, "POST", contacts, props("email", "bob@example.com"))

	e.clock.Add(time.Minute)
	r := e.must(200, "PATCH", contacts+"/"+id, props("firstname", "", "referral_link", "https://r/1"))
	if r.prop("firstname") != "<absent>" || r.prop("referral_link") != "https://r/1" || r.prop("lifecyclestage") != "lead" {
		t.Errorf("after update: %s", r.body)
	}
	if r.str("updatedAt") == r.str("createdAt") {
		t.Errorf("updatedAt did not move")
	}
	r = e.must(200, "PATCH", contacts+"/"+url.PathEscape("ada@example.com")+"?idProperty=email", props("phone", "+1"))
	if r.str("id") != id {
		t.Errorf("update by email changed contact %s, want %s", r.str("id"), id)
	}

	tests := []struct {
		name       string
		path       string
		body       any
		wantStatus int
		wantCat    string
	}{
		{"vanished", contacts + "/12345", props("firstname", "X"), 404, "OBJECT_NOT_FOUND"},
		{"email of another contact", contacts + "/" + id, props("email", "BOB@example.com"), 409, "CONFLICT"},
		{"unknown property", contacts + "/" + id, props("nope", "1"), 400, "VALIDATION_ERROR"},
		{"read-only property", contacts + "/" + id, props("createdate", "2020-01-01"), 400, "VALIDATION_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("PATCH", tt.path, tt.body, tokA)
			if r.status != tt.wantStatus || r.str("category") != tt.wantCat {
				t.Errorf("= %d %s, want %d %s", r.status, r.body, tt.wantStatus, tt.wantCat)
			}
		})
	}
	// A deleted contact is gone for reads and updates.
	if !e.srv.Delete(tokA, id) {
		t.Fatal("Delete = false")
	}
	if r := e.do("GET", contacts+"/"+id, nil, tokA); r.status != 404 {
		t.Errorf("GET deleted = %d, want 404", r.status)
	}
	if r := e.do("POST", contacts, props("email", "ada@example.com"), tokA); r.status != 201 {
		t.Errorf("re-create after delete = %d, want 201 (the email is free)", r.status)
	}
}

func TestSearchLagAndFilters(t *testing.T) {
	cfg := defaultConfig()
	cfg.SearchLag = 30 * time.Second
	e := newEnv(t, cfg)
	id := e.must(201, "POST", contacts, props("email", "ada@example.com", "referrer_sync_event_id", "ev-1")).str("id")
	search := func(filters ...map[string]any) result {
		return e.must(200, "POST", contacts+"/search", map[string]any{
			"filterGroups": []any{map[string]any{"filters": filters}},
			"properties":   []string{"email", "referrer_sync_event_id"},
		})
	}
	eq := func(p, v string) map[string]any {
		return map[string]any{"propertyName": p, "operator": "EQ", "value": v}
	}
	total := func(r result) float64 { n, _ := r.json()["total"].(float64); return n }

	if n := total(search(eq("email", "ada@example.com"))); n != 0 {
		t.Errorf("search right after create found %v, want 0 (lag)", n)
	}
	// Reads are consistent at once.
	e.must(200, "GET", contacts+"/ada%40example.com?idProperty=email", nil)

	e.clock.Add(30 * time.Second)
	tests := []struct {
		name    string
		filters []map[string]any
		want    float64
	}{
		{"EQ email, other case", []map[string]any{eq("email", "ADA@example.com")}, 1},
		{"EQ marker", []map[string]any{eq("referrer_sync_event_id", "ev-1")}, 1},
		{"AND within a group", []map[string]any{eq("email", "ada@example.com"), eq("referrer_sync_event_id", "ev-2")}, 0},
		{"HAS_PROPERTY", []map[string]any{{"propertyName": "referral_link", "operator": "HAS_PROPERTY"}}, 0},
		{"NOT_HAS_PROPERTY", []map[string]any{{"propertyName": "referral_link", "operator": "NOT_HAS_PROPERTY"}}, 1},
		{"IN", []map[string]any{{"propertyName": "email", "operator": "IN", "values": []string{"x@y.z", "ada@example.com"}}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := search(tt.filters...)
			if got := total(r); got != tt.want {
				t.Errorf("total = %v, want %v (%s)", got, tt.want, r.body)
			}
		})
	}
	r := search(eq("referrer_sync_event_id", "ev-1"))
	res, _ := r.json()["results"].([]any)
	if len(res) != 1 || res[0].(map[string]any)["id"] != id {
		t.Errorf("results = %s", r.body)
	}
	if r.header.Get("X-HubSpot-RateLimit-Max") != "" {
		t.Errorf("search response carries rate-limit headers; HubSpot's do not")
	}
	bad := e.do("POST", contacts+"/search", map[string]any{"filterGroups": []any{map[string]any{"filters": []any{
		map[string]any{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "a"}}}}}, tokA)
	if bad.status != 400 {
		t.Errorf("unsupported operator = %d, want 400", bad.status)
	}
}

func TestSearchPaging(t *testing.T) {
	e := newEnv(t, defaultConfig())
	for i := range 5 {
		e.must(201, "POST", contacts, props("email", fmt.Sprintf("p%d@example.com", i), "referral_link", "same"))
	}
	var got []string
	after := ""
	for range 10 {
		body := map[string]any{"limit": 2, "filterGroups": []any{map[string]any{"filters": []any{
			map[string]any{"propertyName": "referral_link", "operator": "EQ", "value": "same"}}}}}
		if after != "" {
			body["after"] = after
		}
		r := e.must(200, "POST", contacts+"/search", body)
		m := r.json()
		for _, x := range m["results"].([]any) {
			got = append(got, x.(map[string]any)["id"].(string))
		}
		paging, _ := m["paging"].(map[string]any)
		if paging == nil {
			break
		}
		after = paging["next"].(map[string]any)["after"].(string)
	}
	if len(got) != 5 {
		t.Errorf("paged through %d contacts, want 5: %v", len(got), got)
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, defaultConfig())
	tests := []struct {
		method, path string
		body         any
		want         int
	}{
		{"POST", "/crm/v3/objects/contacts", props("email", "v3@example.com"), 201},
		{"GET", "/crm/v3/objects/contacts/v3%40example.com?idProperty=email", nil, 200},
		{"GET", "/crm/v3/properties/contacts", nil, 200},
		{"GET", "/crm/objects/2026-09/contacts/v3%40example.com?idProperty=email", nil, 200},
		{"GET", "/crm/properties/2026-03/contacts", nil, 200},
		{"PUT", contacts + "/1", props("firstname", "x"), 404},
		{"DELETE", contacts + "/1", nil, 404},
		{"GET", "/crm/objects/2026-13/contacts/1", nil, 404},
		{"GET", "/crm/v3/objects/companies/1", nil, 404},
		{"GET", "/contacts", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			if r := e.do(tt.method, tt.path, tt.body, tokA); r.status != tt.want {
				t.Errorf("= %d %s, want %d", r.status, r.body, tt.want)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, defaultConfig())
	tests := []struct {
		name    string
		method  string
		path    string
		body    any
		tok     string
		want    int
		wantCat string
	}{
		{"no token", "GET", contacts + "/1", nil, "", 401, "INVALID_AUTHENTICATION"},
		{"unknown token", "GET", contacts + "/1", nil, tokUnknown, 401, "INVALID_AUTHENTICATION"},
		{"read-only token writes", "POST", contacts, props("email", "a@example.com"), tokRO, 403, "MISSING_SCOPES"},
		{"read-only token creates a property", "POST", "/crm/v3/properties/contacts", map[string]any{}, tokRO, 403, "MISSING_SCOPES"},
		{"read-only token reads", "GET", "/crm/v3/properties/contacts", nil, tokRO, 200, ""},
		{"read-only token searches", "POST", contacts + "/search", map[string]any{}, tokRO, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.body, tt.tok)
			if r.status != tt.want || r.str("category") != tt.wantCat {
				t.Errorf("= %d %s, want %d %s", r.status, r.body, tt.want, tt.wantCat)
			}
		})
	}
}

func TestTypedValues(t *testing.T) {
	e := newEnv(t, defaultConfig())
	for _, p := range []map[string]any{
		{"name": "signed_up", "label": "Signed up", "type": "datetime", "fieldType": "date", "groupName": "contactinformation"},
		{"name": "signup_day", "label": "Signup day", "type": "date", "fieldType": "date", "groupName": "contactinformation"},
		{"name": "vip", "label": "VIP", "type": "bool", "fieldType": "booleancheckbox", "groupName": "contactinformation"},
		{"name": "score", "label": "Score", "type": "number", "fieldType": "number", "groupName": "contactinformation"},
	} {
		e.must(201, "POST", "/crm/v3/properties/contacts", p)
	}
	tests := []struct {
		prop, value string
		want        int
	}{
		{"signed_up", "1788000000000", 201},
		{"signed_up", "2026-09-01T12:00:00Z", 201},
		{"signed_up", "yesterday", 400},
		{"signup_day", "1787961600000", 201}, // 2026-08-29T00:00:00Z
		{"signup_day", "2026-09-01", 201},
		{"signup_day", "1788000000000", 400}, // not midnight
		{"vip", "true", 201},
		{"vip", "yes", 400},
		{"score", "12.5", 201},
		{"score", "1,000", 400},
	}
	for i, tt := range tests {
		t.Run(tt.prop+"="+tt.value, func(t *testing.T) {
			r := e.do("POST", contacts, props("email", fmt.Sprintf("t%d@example.com", i), tt.prop, tt.value), tokA)
			if r.status != tt.want {
				t.Errorf("= %d %s, want %d", r.status, r.body, tt.want)
			}
		})
	}
}
