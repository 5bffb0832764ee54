package emulator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

func TestCreateContact(t *testing.T) {
	tests := []struct {
		name     string
		body     map[string]any
		opts     []opt
		wantRole string
		check    func(t *testing.T, res result)
	}{
		{name: "user by email", body: map[string]any{"email": "Ann@Example.COM", "role": "user", "name": "Ann"}, wantRole: "user",
			check: func(t *testing.T, res result) {
				if res.str("email") != "Ann@Example.COM" || res.str("email_domain") != "example.com" || res.str("name") != "Ann" {
					t.Errorf("email, domain, name = %q, %q, %q; want Ann@Example.COM, example.com, Ann",
						res.str("email"), res.str("email_domain"), res.str("name"))
				}
				if res.obj["signed_up_at"] != res.obj["created_at"] {
					t.Errorf("signed_up_at = %v, want created_at %v for a user", res.obj["signed_up_at"], res.obj["created_at"])
				}
			}},
		{name: "role defaults to user", body: map[string]any{"external_id": "e1"}, wantRole: "user",
			check: func(t *testing.T, res result) {
				if res.str("external_id") != "e1" || res.str("email") != "" {
					t.Errorf("external_id, email = %q, %q; want e1, empty", res.str("external_id"), res.str("email"))
				}
			}},
		{name: "lead by role only", body: map[string]any{"role": "lead"}, wantRole: "lead",
			check: func(t *testing.T, res result) {
				if res.obj["signed_up_at"] != nil || res.obj["external_id"] != nil {
					t.Errorf("signed_up_at, external_id = %v, %v; want null for a bare lead", res.obj["signed_up_at"], res.obj["external_id"])
				}
			}},
		{name: "all fields", wantRole: "user", body: map[string]any{
			"email": "b@c.io", "email_verified": true, "phone": "+1555", "avatar": "https://x.io/a.png",
			"signed_up_at": 1700000000, "last_seen_at": 1700000100, "owner_id": "123",
			"unsubscribed_from_emails": true, "custom_attributes": map[string]any{"rf_source_id": "s-1", "plan": 3},
			"unknown_field": "ignored",
		}, check: func(t *testing.T, res result) {
			want := map[string]any{
				"phone": "+1555", "signed_up_at": json.Number("1700000000"), "last_seen_at": json.Number("1700000100"),
				"owner_id": "123", "unsubscribed_from_emails": true,
			}
			for k, v := range want {
				if res.obj[k] != v {
					t.Errorf("%s = %#v, want %#v", k, res.obj[k], v)
				}
			}
			if av, _ := res.obj["avatar"].(map[string]any); av["image_url"] != "https://x.io/a.png" || av["type"] != "avatar" {
				t.Errorf("avatar = %v, want an avatar object with the URL", res.obj["avatar"])
			}
			ca, _ := res.obj["custom_attributes"].(map[string]any)
			if ca["rf_source_id"] != "s-1" || ca["plan"] != json.Number("3") {
				t.Errorf("custom_attributes = %v, want rf_source_id s-1, plan 3", ca)
			}
			if _, ok := res.obj["unknown_field"]; ok {
				t.Errorf("unknown_field echoed back")
			}
		}},
		{name: "owner_id integer before 2.16", wantRole: "user", opts: []opt{version("2.15")},
			body: map[string]any{"email": "o@p.io", "owner_id": 42},
			check: func(t *testing.T, res result) {
				if res.obj["owner_id"] != json.Number("42") {
					t.Errorf("owner_id = %#v, want the integer 42 in 2.15", res.obj["owner_id"])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{})
			res := e.must(http.StatusOK, "POST", "/contacts", tt.body, tt.opts...)
			if res.str("type") != "contact" || res.str("role") != tt.wantRole || res.str("workspace_id") != "ws_a" {
				t.Errorf("type, role, workspace_id = %q, %q, %q; want contact, %s, ws_a", res.str("type"), res.str("role"), res.str("workspace_id"), tt.wantRole)
			}
			if !idPattern.MatchString(res.str("id")) {
				t.Errorf("id = %q, want 24 lowercase hex digits", res.str("id"))
			}
			if res.obj["created_at"] != json.Number(fmt.Sprint(start.Unix())) || res.obj["updated_at"] != res.obj["created_at"] {
				t.Errorf("created_at, updated_at = %v, %v; want %d", res.obj["created_at"], res.obj["updated_at"], start.Unix())
			}
			for _, list := range []string{"tags", "notes", "companies"} {
				stub, _ := res.obj[list].(map[string]any)
				if stub["type"] != "list" || stub["url"] != "/contacts/"+res.str("id")+"/"+list || stub["has_more"] != false {
					t.Errorf("%s = %v, want a list stub", list, res.obj[list])
				}
			}
			tt.check(t, res)
			got := e.srv.Contacts(tokA)
			if len(got) != 1 || got[0].ID != res.str("id") || got[0].Role != tt.wantRole {
				t.Errorf("Contacts() = %+v, want the one created contact", got)
			}
		})
	}
}

func TestCreateContactRejects(t *testing.T) {
	tests := []struct {
		name    string
		body    any
		opts    []opt
		wantMsg string
	}{
		{"no identifier", map[string]any{"name": "x"}, nil, "at least one of email, external_id or role"},
		{"role not a string", map[string]any{"role": 5}, nil, "'role' must be a string"},
		{"unknown role", map[string]any{"role": "admin"}, nil, "'role' must be 'user' or 'lead'"},
		{"bad email", map[string]any{"email": "not-an-email"}, nil, "Invalid email address 'not-an-email'"},
		{"email without dot", map[string]any{"email": "a@localhost"}, nil, "Invalid email address"},
		{"email null", map[string]any{"email": nil, "role": "lead"}, nil, "'email' must be a string"},
		{"blank external_id", map[string]any{"external_id": " "}, nil, "'external_id' must not be blank"},
		{"unknown custom attribute", map[string]any{"email": "a@b.co", "custom_attributes": map[string]any{"x": 1}}, nil, "Custom attribute 'x' does not exist"},
		{"custom attribute wrong case", map[string]any{"email": "a@b.co", "custom_attributes": map[string]any{"Plan": 1}}, nil, "Custom attribute 'Plan' does not exist"},
		{"custom attributes not an object", map[string]any{"email": "a@b.co", "custom_attributes": []string{"plan"}}, nil, "'custom_attributes' must be an object"},
		{"owner_id integer in 2.16", map[string]any{"email": "a@b.co", "owner_id": 5}, nil, "'owner_id' must be a string"},
		{"owner_id string in 2.15", map[string]any{"email": "a@b.co", "owner_id": "5"}, []opt{version("2.15")}, "'owner_id' must be an integer"},
		{"owner_id not an admin id", map[string]any{"email": "a@b.co", "owner_id": "abc"}, nil, "not the id of an admin"},
		{"email_verified without email", map[string]any{"role": "user", "email_verified": true}, nil, "'email_verified' must be supplied together with 'email'"},
		{"timestamp as float", map[string]any{"email": "a@b.co", "signed_up_at": 1.5}, nil, "'signed_up_at' must be an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{})
			res := e.do("POST", "/contacts", tt.body, tt.opts...)
			if res.status != http.StatusBadRequest || res.errCode() != "parameter_invalid" || !strings.Contains(res.errMessage(), tt.wantMsg) {
				t.Errorf("got %d %q %q, want 400 parameter_invalid containing %q", res.status, res.errCode(), res.errMessage(), tt.wantMsg)
			}
			if n := len(e.srv.Contacts(tokA)); n != 0 {
				t.Errorf("rejected create stored %d contacts", n)
			}
		})
	}
	t.Run("email_verified ignored before 2.16", func(t *testing.T) {
		e := newEnv(t, emulator.Config{})
		e.must(http.StatusOK, "POST", "/contacts", map[string]any{"role": "user", "email_verified": true}, version("2.15"))
	})
}

func TestCreateConflicts(t *testing.T) {
	conflict := func(t *testing.T, res result, id string) {
		t.Helper()
		want := "A contact matching those details already exists with id=" + id
		if res.status != http.StatusConflict || res.errCode() != "conflict" || res.errMessage() != want {
			t.Errorf("got %d %q %q, want 409 conflict %q", res.status, res.errCode(), res.errMessage(), want)
		}
	}
	tests := []struct {
		name     string
		first    map[string]any
		second   map[string]any
		conflict bool
	}{
		{"user with same external_id", map[string]any{"external_id": "x"}, map[string]any{"external_id": "x", "email": "new@b.co"}, true},
		{"user with same email, other case", map[string]any{"email": "ann@b.co"}, map[string]any{"email": "ANN@B.CO"}, true},
		{"user with same email, new external_id", map[string]any{"email": "ann@b.co", "external_id": "1"}, map[string]any{"email": "ann@b.co", "external_id": "2"}, true},
		{"lead with a user's external_id", map[string]any{"external_id": "x"}, map[string]any{"external_id": "x", "role": "lead"}, true},
		{"user with a lead's external_id", map[string]any{"external_id": "x", "role": "lead"}, map[string]any{"external_id": "x"}, true},
		{"lead with a user's email", map[string]any{"email": "ann@b.co"}, map[string]any{"email": "ann@b.co", "role": "lead"}, false},
		{"lead with a lead's email", map[string]any{"email": "ann@b.co", "role": "lead"}, map[string]any{"email": "ann@b.co", "role": "lead"}, false},
		{"user with a lead's email", map[string]any{"email": "ann@b.co", "role": "lead"}, map[string]any{"email": "ann@b.co", "role": "user"}, false},
		{"external_id is case-sensitive", map[string]any{"external_id": "x"}, map[string]any{"external_id": "X"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Config{})
			id := e.create(tt.first)
			res := e.do("POST", "/contacts", tt.second)
			want := 1
			if tt.conflict {
				conflict(t, res, id)
			} else {
				want = 2
				if res.status != http.StatusOK {
					t.Errorf("second create = %d %s, want 200", res.status, res.raw)
				}
			}
			if got := len(e.srv.Contacts(tokA)); got != want {
				t.Errorf("contacts = %d, want %d", got, want)
			}
		})
	}
	t.Run("workspaces are separate", func(t *testing.T) {
		e := newEnv(t, emulator.Config{})
		e.create(map[string]any{"external_id": "x"})
		e.create(map[string]any{"external_id": "x"}, token(tokB))
	})
	t.Run("concurrent creates make one contact", func(t *testing.T) {
		e := newEnv(t, emulator.Config{})
		var wg sync.WaitGroup
		statuses := make(chan int, 20)
		for range 20 {
			wg.Go(func() {
				r := e.request("POST", "/contacts", map[string]any{"external_id": "race", "email": "r@b.co"})
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Error(err)
					return
				}
				_ = resp.Body.Close() // only the status matters
				statuses <- resp.StatusCode
			})
		}
		wg.Wait()
		close(statuses)
		count := map[int]int{}
		for s := range statuses {
			count[s]++
		}
		if count[200] != 1 || count[409] != 19 {
			t.Errorf("statuses = %v, want one 200 and nineteen 409", count)
		}
	})
}

func TestGetAndFindContact(t *testing.T) {
	e := newEnv(t, emulator.Config{SearchLag: time.Hour})
	user := e.create(map[string]any{"external_id": "u/1:x", "email": "u@b.co"})
	lead := e.create(map[string]any{"external_id": "l1", "role": "lead"})
	tests := []struct {
		name, path string
		opts       []opt
		want       int
		wantID     string
		wantMsg    string
	}{
		{"get user", "/contacts/" + user, nil, 200, user, ""},
		{"get lead", "/contacts/" + lead, nil, 200, lead, ""},
		{"get unknown", "/contacts/0123456789abcdef01234567", nil, 404, "", "User Not Found"},
		{"get other workspace", "/contacts/" + user, []opt{token(tokB)}, 404, "", "User Not Found"},
		{"find user, escaped id", "/contacts/find_by_external_id/u%2F1:x", nil, 200, user, ""},
		{"find lead is not found", "/contacts/find_by_external_id/l1", nil, 404, "", "User Not Found"},
		{"find unknown", "/contacts/find_by_external_id/zzz", nil, 404, "", "User Not Found"},
		{"find in 2.13", "/contacts/find_by_external_id/u%2F1:x", []opt{version("2.13")}, 200, user, ""},
		{"find before 2.13", "/contacts/find_by_external_id/u%2F1:x", []opt{version("2.12")}, 404, "", "Resource Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("GET", tt.path, nil, tt.opts...)
			if res.status != tt.want || res.str("id") != tt.wantID || res.errMessage() != tt.wantMsg {
				t.Errorf("got %d id %q message %q, want %d id %q message %q", res.status, res.str("id"), res.errMessage(), tt.want, tt.wantID, tt.wantMsg)
			}
			if tt.want == 404 && res.errCode() != "not_found" {
				t.Errorf("code = %q, want not_found", res.errCode())
			}
		})
	}
	t.Run("merge history on request", func(t *testing.T) {
		res := e.must(200, "GET", "/contacts/"+user+"?include_merge_history=true", nil)
		if h, ok := res.obj["merge_history"].([]any); !ok || len(h) != 0 {
			t.Errorf("merge_history = %v, want []", res.obj["merge_history"])
		}
		if res := e.must(200, "GET", "/contacts/"+user, nil); res.obj["merge_history"] != nil {
			t.Errorf("merge_history without the parameter = %v, want absent", res.obj["merge_history"])
		}
	})
}

func TestUpdateContact(t *testing.T) {
	setup := func(t *testing.T) (*env, string) {
		e := newEnv(t, emulator.Config{})
		id := e.create(map[string]any{"email": "a@b.co", "external_id": "a", "name": "Ann", "phone": "+1",
			"custom_attributes": map[string]any{"plan": "pro", "rf_source_id": "s1"}})
		return e, id
	}
	t.Run("fields and nulls", func(t *testing.T) {
		e, id := setup(t)
		e.clock.Add(5 * time.Second)
		res := e.must(200, "PUT", "/contacts/"+id, map[string]any{
			"name": "Bea", "phone": nil, "email": "bea@c.io", "custom_attributes": map[string]any{"plan": nil, "rf_source_id": "s2"},
		})
		if res.str("name") != "Bea" || res.obj["phone"] != nil || res.str("email") != "bea@c.io" || res.str("email_domain") != "c.io" {
			t.Errorf("name, phone, email, domain = %v, %v, %v, %v; want Bea, null, bea@c.io, c.io",
				res.obj["name"], res.obj["phone"], res.obj["email"], res.obj["email_domain"])
		}
		if ca, _ := res.obj["custom_attributes"].(map[string]any); len(ca) != 1 || ca["rf_source_id"] != "s2" {
			t.Errorf("custom_attributes = %v, want only rf_source_id s2", ca)
		}
		if got, want := res.obj["updated_at"], json.Number(fmt.Sprint(start.Unix()+5)); got != want {
			t.Errorf("updated_at = %v, want %v", got, want)
		}
		if res.str("external_id") != "a" {
			t.Errorf("external_id = %q, want it unchanged", res.str("external_id"))
		}
		c := e.srv.Contacts(tokA)[0]
		if c.Phone != nil || *c.Name != "Bea" || !c.UpdatedAt.Equal(start.Add(5*time.Second)) {
			t.Errorf("stored contact = %+v, want the update applied", c)
		}
	})
	t.Run("custom_attributes null clears them", func(t *testing.T) {
		e, id := setup(t)
		res := e.must(200, "PUT", "/contacts/"+id, map[string]any{"custom_attributes": nil})
		if ca, _ := res.obj["custom_attributes"].(map[string]any); len(ca) != 0 {
			t.Errorf("custom_attributes = %v, want empty", ca)
		}
	})
	t.Run("empty body is a no-op", func(t *testing.T) {
		e, id := setup(t)
		res := e.must(200, "PUT", "/contacts/"+id, map[string]any{})
		if res.str("name") != "Ann" || res.str("email") != "a@b.co" {
			t.Errorf("contact = %s, want it unchanged", res.raw)
		}
	})
	t.Run("lead becomes user", func(t *testing.T) {
		e, _ := setup(t)
		lead := e.create(map[string]any{"role": "lead", "email": "l@b.co"})
		res := e.must(200, "PUT", "/contacts/"+lead, map[string]any{"role": "user"})
		if res.str("role") != "user" {
			t.Errorf("role = %q, want user", res.str("role"))
		}
		// Now a user, its email is taken for other users.
		e.must(409, "POST", "/contacts", map[string]any{"email": "L@b.co"})
	})
	tests := []struct {
		name     string
		body     map[string]any
		wantCode int
		wantMsg  string
	}{
		{"duplicate external_id", map[string]any{"external_id": "other"}, 409, "already exists with id="},
		{"duplicate user email", map[string]any{"email": "Other@b.co"}, 409, "already exists with id="},
		{"lead sharing email into user", map[string]any{"role": "user"}, 0, ""},
		{"user into lead", map[string]any{"role": "lead"}, 400, "A user cannot be converted into a lead"},
		{"bad email", map[string]any{"email": "x"}, 400, "Invalid email address"},
		{"unknown attribute", map[string]any{"custom_attributes": map[string]any{"nope": 1}}, 400, "Custom attribute 'nope' does not exist"},
		{"external_id null", map[string]any{"external_id": nil}, 400, "'external_id' must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, id := setup(t)
			other := e.create(map[string]any{"email": "other@b.co", "external_id": "other"})
			target := id
			if tt.name == "lead sharing email into user" {
				// A lead with a user's email cannot become a user.
				target = e.create(map[string]any{"role": "lead", "email": "other@b.co"})
				tt.wantCode, tt.wantMsg = 409, "already exists with id="+other
			}
			before := e.srv.Contacts(tokA)
			res := e.do("PUT", "/contacts/"+target, tt.body)
			if res.status != tt.wantCode || !strings.Contains(res.errMessage(), tt.wantMsg) {
				t.Errorf("got %d %q, want %d with %q", res.status, res.errMessage(), tt.wantCode, tt.wantMsg)
			}
			if tt.wantCode == 409 && !strings.HasSuffix(res.errMessage(), "id="+other) {
				t.Errorf("message %q does not name %s", res.errMessage(), other)
			}
			after := e.srv.Contacts(tokA)
			for i := range before {
				if before[i].Email != after[i].Email || before[i].ExternalID != after[i].ExternalID || before[i].Role != after[i].Role {
					t.Errorf("rejected update changed contact %d: %+v -> %+v", i, before[i], after[i])
				}
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		e, _ := setup(t)
		res := e.do("PUT", "/contacts/0123456789abcdef01234567", map[string]any{"name": "x"})
		if res.status != 404 || res.errMessage() != "User Not Found" {
			t.Errorf("got %d %q, want 404 User Not Found", res.status, res.errMessage())
		}
	})
	t.Run("external_id index follows update", func(t *testing.T) {
		e, id := setup(t)
		e.must(200, "PUT", "/contacts/"+id, map[string]any{"external_id": "b"})
		e.must(404, "GET", "/contacts/find_by_external_id/a", nil)
		if res := e.must(200, "GET", "/contacts/find_by_external_id/b", nil); res.str("id") != id {
			t.Errorf("find b = %q, want %s", res.str("id"), id)
		}
		e.create(map[string]any{"external_id": "a"}) // "a" is free again
	})
}
