package emulator_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

// attributes lists data attributes and returns them by full_name.
func (e *env) attributes(query string) map[string]map[string]any {
	e.t.Helper()
	res := e.must(http.StatusOK, "GET", "/data_attributes"+query, nil)
	if res.str("type") != "list" {
		e.t.Errorf("type = %q, want list", res.str("type"))
	}
	out := map[string]map[string]any{}
	data, _ := res.obj["data"].([]any)
	for _, d := range data {
		m, _ := d.(map[string]any)
		name, _ := m["full_name"].(string)
		out[m["model"].(string)+":"+name] = m
	}
	return out
}

func TestListDataAttributes(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	contact := e.attributes("?model=contact")
	email, custom := contact["contact:email"], contact["contact:custom_attributes.rf_source_id"]
	if email == nil || email["custom"] != false || email["name"] != "email" || email["type"] != "data_attribute" {
		t.Errorf("email attribute = %v, want a standard (custom:false) data_attribute", email)
	}
	if custom == nil || custom["custom"] != true || custom["name"] != "rf_source_id" || custom["data_type"] != "string" || custom["id"] == nil {
		t.Errorf("rf_source_id attribute = %v, want custom:true, data_type string, with an id", custom)
	}
	if contact["contact:custom_attributes.plan"] == nil {
		t.Errorf("attribute plan missing from %v", contact)
	}
	for k := range contact {
		if k[:8] != "contact:" {
			t.Errorf("model=contact lists %s", k)
		}
	}
	if all := e.attributes(""); all["company:name"] == nil || all["contact:email"] == nil {
		t.Errorf("no model lists %d attributes, want contact and company ones", len(all))
	}
	if company := e.attributes("?model=company"); company["company:name"] == nil || company["contact:email"] != nil {
		t.Errorf("model=company lists %v, want company attributes only", company)
	}
	for _, m := range []string{"conversation", "ticket"} {
		res := e.do("GET", "/data_attributes?model="+m, nil)
		if res.status != http.StatusUnprocessableEntity || res.errCode() != "parameter_invalid" {
			t.Errorf("model=%s: got %d %q, want 422 parameter_invalid", m, res.status, res.errCode())
		}
	}
}

func TestCreateDataAttribute(t *testing.T) {
	t.Run("create then use", func(t *testing.T) {
		e := newEnv(t, emulator.Config{})
		res := e.must(200, "POST", "/data_attributes", map[string]any{
			"name": "Referral Code", "model": "contact", "data_type": "string", "description": "code", "messenger_writable": true})
		want := map[string]any{"type": "data_attribute", "name": "Referral Code", "full_name": "custom_attributes.Referral Code",
			"model": "contact", "data_type": "string", "custom": true, "archived": false, "messenger_writable": true, "description": "code"}
		for k, v := range want {
			if res.obj[k] != v {
				t.Errorf("%s = %v, want %v", k, res.obj[k], v)
			}
		}
		if res.obj["id"] == nil || res.obj["admin_id"] == nil || res.obj["created_at"] == nil {
			t.Errorf("attribute %s lacks id, admin_id or created_at", res.raw)
		}
		if got := e.attributes("?model=contact"); got["contact:custom_attributes.Referral Code"] == nil {
			t.Errorf("new attribute not listed")
		}
		id := e.create(map[string]any{"email": "a@b.co", "custom_attributes": map[string]any{"Referral Code": "X1"}})
		e.must(200, "POST", "/data_attributes", map[string]any{"name": "Seats", "model": "contact", "data_type": "integer"})
		e.must(200, "PUT", "/contacts/"+id, map[string]any{"custom_attributes": map[string]any{"Seats": 4}})
		if ids, _ := e.search(query("custom_attributes.Seats", ">", 3)); !equalIDs(ids, []string{id}) {
			t.Errorf("search on the new integer attribute = %v, want %s", ids, id)
		}
	})
	t.Run("types", func(t *testing.T) {
		e := newEnv(t, emulator.Config{})
		tests := []struct {
			body        map[string]any
			wantType    string
			wantOptions []any
		}{
			{map[string]any{"name": "when", "model": "contact", "data_type": "datetime"}, "date", nil},
			{map[string]any{"name": "ok", "model": "contact", "data_type": "boolean"}, "boolean", nil},
			{map[string]any{"name": "size", "model": "contact", "data_type": "options", "options": []any{map[string]any{"value": "S"}, map[string]any{"value": "M"}}},
				"string", []any{"S", "M"}},
		}
		for _, tt := range tests {
			res := e.must(200, "POST", "/data_attributes", tt.body)
			opts, _ := res.obj["options"].([]any)
			if res.str("data_type") != tt.wantType || !slices.Equal(opts, tt.wantOptions) {
				t.Errorf("%v: data_type, options = %q, %v; want %q, %v", tt.body["data_type"], res.str("data_type"), opts, tt.wantType, tt.wantOptions)
			}
		}
	})
	tests := []struct {
		name    string
		first   map[string]any
		body    map[string]any
		opts    []opt
		wantMsg string
	}{
		{"duplicate", map[string]any{"name": "Tier", "model": "contact", "data_type": "string"},
			map[string]any{"name": "tier", "model": "contact", "data_type": "integer"}, nil,
			"You already have 'Tier' in your people data. To save this as new people data, use a different name."},
		{"duplicate of a configured attribute", nil,
			map[string]any{"name": "plan", "model": "contact", "data_type": "string"}, nil,
			"You already have 'plan' in your people data. To save this as new people data, use a different name."},
		{"name taken by company data", map[string]any{"name": "The One Ring", "model": "company", "data_type": "string"},
			map[string]any{"name": "The One Ring", "model": "contact", "data_type": "integer"}, nil,
			"You already have 'The One Ring' in your company data. To save this as new people data, use a different name."},
		{"invalid name", nil, map[string]any{"name": "!nv@l!d n@me", "model": "company", "data_type": "string"}, nil,
			"Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens"},
		{"dot in name", nil, map[string]any{"name": "a.b", "model": "contact", "data_type": "string"}, nil,
			"Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens"},
		{"standard name", nil, map[string]any{"name": "Email", "model": "contact", "data_type": "string"}, nil,
			"'Email' is one of our standard attributes, please use a different name"},
		{"bad data type", nil, map[string]any{"name": "The Second Ring", "model": "company", "data_type": "mithril"}, nil,
			"Data Type isn't an option"},
		{"bad model", nil, map[string]any{"name": "x", "model": "ticket", "data_type": "string"}, nil,
			"The Data Attribute model field must be either contact or company"},
		{"one option", nil, map[string]any{"name": "x", "model": "contact", "data_type": "options", "options": []any{map[string]any{"value": "1-10"}}}, nil,
			"You must have at least two options on a list type data attribute"},
		{"options before 2.14", nil, map[string]any{"name": "x", "model": "contact", "data_type": "options",
			"options": []any{map[string]any{"value": "a"}, map[string]any{"value": "b"}}}, []opt{version("2.13")}, "Data Type isn't an option"},
		{"no name", nil, map[string]any{"model": "contact", "data_type": "string"}, nil, "'name' is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{})
			if tt.first != nil {
				e.must(200, "POST", "/data_attributes", tt.first)
			}
			before := len(e.attributes(""))
			res := e.do("POST", "/data_attributes", tt.body, tt.opts...)
			if res.status != 400 || res.errCode() != "parameter_invalid" || res.errMessage() != tt.wantMsg {
				t.Errorf("got %d %q %q, want 400 parameter_invalid %q", res.status, res.errCode(), res.errMessage(), tt.wantMsg)
			}
			if after := len(e.attributes("")); after != before {
				t.Errorf("attributes %d -> %d after a rejected create", before, after)
			}
		})
	}
}
