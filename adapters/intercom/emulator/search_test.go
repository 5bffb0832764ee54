package emulator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

// searchFixture creates four contacts a day apart (u2 a day after u1, and
// so on) and returns their ids by name.
func searchFixture(t *testing.T) (*env, map[string]string) {
	t.Helper()
	e := newEnv(t, emulator.Config{})
	e.must(200, "POST", "/data_attributes", map[string]any{"name": "score", "model": "contact", "data_type": "integer"})
	ids := map[string]string{}
	ids["u1"] = e.create(map[string]any{"email": "ann@alpha.io", "external_id": "e1", "name": "Ann Smith",
		"custom_attributes": map[string]any{"plan": "pro", "score": 10}})
	e.clock.Add(24 * time.Hour)
	ids["u2"] = e.create(map[string]any{"email": "Bob@Beta.io", "external_id": "e2", "name": "Bob", "phone": "+44",
		"custom_attributes": map[string]any{"plan": "free", "score": 20}})
	e.clock.Add(24 * time.Hour)
	ids["l1"] = e.create(map[string]any{"email": "ann@alpha.io", "role": "lead", "name": "Ann Lead"})
	e.clock.Add(time.Second)
	ids["l2"] = e.create(map[string]any{"role": "lead", "external_id": "e3"})
	return e, ids
}

func TestSearchFilters(t *testing.T) {
	e, ids := searchFixture(t)
	day := start.Unix() - start.Unix()%86400
	tests := []struct {
		name string
		q    any
		want []string
	}{
		{"email equals, any case", filter("email", "=", "ANN@ALPHA.IO"), []string{"u1", "l1"}},
		{"email not equal includes no email", filter("email", "!=", "ann@alpha.io"), []string{"u2", "l2"}},
		{"role", filter("role", "=", "lead"), []string{"l1", "l2"}},
		{"name contains", filter("name", "~", "Ann"), []string{"u1", "l1"}},
		{"name does not contain", filter("name", "!~", "Ann"), []string{"u2", "l2"}},
		{"name starts with", filter("name", "^", "Ann"), []string{"u1", "l1"}},
		{"name ends with", filter("name", "$", "Lead"), []string{"l1"}},
		{"name is case-sensitive", filter("name", "=", "bob"), nil},
		{"external_id IN", filter("external_id", "IN", []any{"e1", "e3", "zz"}), []string{"u1", "l2"}},
		{"external_id NIN", filter("external_id", "NIN", []any{"e1"}), []string{"u2", "l1", "l2"}},
		{"email_domain", filter("email_domain", "=", "BETA.io"), []string{"u2"}},
		{"phone is null", filter("phone", "=", nil), []string{"u1", "l1", "l2"}},
		{"phone is not null", filter("phone", "!=", nil), []string{"u2"}},
		{"id", filter("id", "=", ids["u2"]), []string{"u2"}},
		{"created on a day", filter("created_at", "=", day+3600), []string{"u1"}},
		{"created after a day starts the next day", filter("created_at", ">", fmt.Sprint(day+3600)), []string{"u2", "l1", "l2"}},
		{"created before a day", filter("created_at", "<", day+86400+5), []string{"u1"}},
		{"custom string", filter("custom_attributes.plan", "=", "pro"), []string{"u1"}},
		{"custom integer >=", filter("custom_attributes.score", ">=", 15), []string{"u2"}},
		{"custom integer <", filter("custom_attributes.score", "<", "15"), []string{"u1"}},
		{"boolean", filter("unsubscribed_from_emails", "=", false), []string{"u1", "u2", "l1", "l2"}},
		{"AND with nested OR", group("AND", filter("role", "=", "user"),
			group("OR", filter("email", "=", "ann@alpha.io"), filter("external_id", "=", "e2"))), []string{"u1", "u2"}},
		{"OR of ANDs", group("OR",
			group("AND", filter("role", "=", "lead"), filter("email", "=", "ann@alpha.io")),
			group("AND", filter("role", "=", "user"), filter("external_id", "=", "e2"))), []string{"u2", "l1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, res := e.search(map[string]any{"query": tt.q})
			var want []string
			for _, n := range tt.want {
				want = append(want, ids[n])
			}
			if !equalIDs(got, want) {
				t.Errorf("ids = %v, want %v (%v)", got, want, tt.want)
			}
			if res.str("type") != "list" || res.obj["total_count"] != jsonInt(len(want)) {
				t.Errorf("type, total_count = %v, %v; want list, %d", res.obj["type"], res.obj["total_count"], len(want))
			}
		})
	}
}

func TestSearchRejects(t *testing.T) {
	e, _ := searchFixture(t)
	many := make([]any, 16)
	for i := range many {
		many[i] = filter("role", "=", "user")
	}
	tests := []struct {
		name     string
		body     any
		wantCode string
		wantMsg  string
	}{
		{"no query", map[string]any{}, "parameter_invalid", "'query' is required"},
		{"query not an object", map[string]any{"query": "email"}, "parameter_invalid", "must be an object"},
		{"unknown field", query("favourite_color", "=", "red"), "parameter_invalid", "not a searchable field"},
		{"unknown custom attribute", query("custom_attributes.nope", "=", "x"), "parameter_invalid", "not a searchable field"},
		{"date with >=", query("created_at", ">=", 1), "parameter_invalid", "not supported"},
		{"date with ~", query("created_at", "~", "1"), "parameter_invalid", "not supported"},
		{"string with <", query("name", "<", "b"), "parameter_invalid", "not supported"},
		{"IN without array", query("email", "IN", "a@b.co"), "parameter_invalid", "needs an array"},
		{"date not a timestamp", query("created_at", "=", "yesterday"), "parameter_invalid", "Invalid value"},
		{"null with ~", query("name", "~", nil), "parameter_invalid", "null value"},
		{"bad group operator", map[string]any{"query": map[string]any{"operator": "XOR", "value": []any{}}}, "parameter_invalid", "AND or OR"},
		{"empty group", map[string]any{"query": group("AND")}, "parameter_invalid", "non-empty array"},
		{"16 filters", map[string]any{"query": group("OR", many...)}, "parameter_invalid", "at most 15 filters"},
		{"3 levels", map[string]any{"query": group("AND", group("OR", group("AND", filter("role", "=", "user"))))}, "parameter_invalid", "at most 2 levels"},
		{"per_page too big", map[string]any{"query": filter("role", "=", "user"), "pagination": map[string]any{"per_page": 151}}, "parameter_invalid", "from 1 to 150"},
		{"per_page zero", map[string]any{"query": filter("role", "=", "user"), "pagination": map[string]any{"per_page": 0}}, "parameter_invalid", "from 1 to 150"},
		{"bad cursor", map[string]any{"query": filter("role", "=", "user"), "pagination": map[string]any{"starting_after": "zzz"}}, "parameter_invalid", "starting_after"},
		{"bad sort order", map[string]any{"query": filter("role", "=", "user"), "sort": map[string]any{"field": "email", "order": "desc"}},
			"invalid_sort_order", "Invalid sort order 'desc'. Must be one of: ascending, descending"},
		{"bad sort field", map[string]any{"query": filter("role", "=", "user"), "sort": map[string]any{"field": "shoe_size"}}, "parameter_invalid", "not a sortable field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("POST", "/contacts/search", tt.body)
			if res.status != http.StatusBadRequest || res.errCode() != tt.wantCode || !strings.Contains(res.errMessage(), tt.wantMsg) {
				t.Errorf("got %d %q %q, want 400 %s containing %q", res.status, res.errCode(), res.errMessage(), tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestSearchPagination(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	var all []string
	for i := range 7 {
		all = append(all, e.create(map[string]any{"email": fmt.Sprintf("p%d@b.co", i)}))
	}
	body := func(after string) map[string]any {
		b := query("email_domain", "=", "b.co")
		b["pagination"] = map[string]any{"per_page": 3, "starting_after": after}
		return b
	}
	var got []string
	after := ""
	for page := 1; ; page++ {
		ids, res := e.search(body(after))
		got = append(got, ids...)
		pages, _ := res.obj["pages"].(map[string]any)
		if pages["type"] != "pages" || pages["page"] != jsonInt(page) || pages["per_page"] != jsonInt(3) || pages["total_pages"] != jsonInt(3) {
			t.Errorf("page %d: pages = %v, want type pages, page %d, per_page 3, total_pages 3", page, pages, page)
		}
		if res.obj["total_count"] != jsonInt(len(all)) {
			t.Errorf("page %d: total_count = %v, want %d", page, res.obj["total_count"], len(all))
		}
		next, _ := pages["next"].(map[string]any)
		if next == nil {
			if page != 3 {
				t.Fatalf("no next cursor on page %d, want 3 pages", page)
			}
			break
		}
		if page == 1 {
			// A contact added between pages sorts last and does not
			// shift the later pages.
			all = append(all, e.create(map[string]any{"email": "late@b.co"}))
		}
		after, _ = next["starting_after"].(string)
		if page > 3 {
			t.Fatalf("more than 3 pages")
		}
	}
	if !equalIDs(got, all) {
		t.Errorf("ids over all pages = %v, want %v", got, all)
	}
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Errorf("id %s returned twice", id)
		}
		seen[id] = true
	}

	t.Run("default per_page is 50", func(t *testing.T) {
		for i := range 45 {
			e.create(map[string]any{"email": fmt.Sprintf("q%d@b.co", i)})
		}
		ids, res := e.search(query("email_domain", "=", "b.co"))
		pages, _ := res.obj["pages"].(map[string]any)
		if len(ids) != 50 || pages["per_page"] != jsonInt(50) || res.obj["total_count"] != jsonInt(53) {
			t.Errorf("len, per_page, total = %d, %v, %v; want 50, 50, 53", len(ids), pages["per_page"], res.obj["total_count"])
		}
	})
	t.Run("empty result", func(t *testing.T) {
		ids, res := e.search(query("email", "=", "nobody@b.co"))
		pages, _ := res.obj["pages"].(map[string]any)
		if len(ids) != 0 || pages["total_pages"] != jsonInt(0) || pages["next"] != nil {
			t.Errorf("ids, pages = %v, %v; want none, total_pages 0, no next", ids, pages)
		}
	})
}

func TestSearchSort(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	c := e.create(map[string]any{"email": "c@b.co"})
	a := e.create(map[string]any{"email": "a@b.co"})
	b := e.create(map[string]any{"email": "b@b.co"})
	tests := []struct {
		name string
		sort map[string]any
		opts []opt
		want []string
	}{
		{"default is creation order", nil, nil, []string{c, a, b}},
		{"email ascending", map[string]any{"field": "email", "order": "ascending"}, nil, []string{a, b, c}},
		{"email descending", map[string]any{"field": "email", "order": "descending"}, nil, []string{c, b, a}},
		{"order defaults to descending", map[string]any{"field": "email"}, nil, []string{c, b, a}},
		{"ignored before 2.16", map[string]any{"field": "email", "order": "ascending"}, []opt{version("2.15")}, []string{c, a, b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := query("role", "=", "user")
			if tt.sort != nil {
				body["sort"] = tt.sort
			}
			body["pagination"] = map[string]any{"per_page": 2}
			got, res := e.search(body, tt.opts...)
			pages, _ := res.obj["pages"].(map[string]any)
			next, _ := pages["next"].(map[string]any)
			body["pagination"] = map[string]any{"per_page": 2, "starting_after": next["starting_after"]}
			rest, _ := e.search(body, tt.opts...)
			if got = append(got, rest...); !equalIDs(got, tt.want) {
				t.Errorf("ids = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("cursor from another sort", func(t *testing.T) {
		body := query("role", "=", "user")
		body["pagination"] = map[string]any{"per_page": 1}
		_, res := e.search(body)
		next, _ := res.obj["pages"].(map[string]any)["next"].(map[string]any)
		body["pagination"] = map[string]any{"per_page": 1, "starting_after": next["starting_after"]}
		body["sort"] = map[string]any{"field": "email"}
		if res := e.do("POST", "/contacts/search", body); res.status != 400 {
			t.Errorf("status = %d, want 400", res.status)
		}
	})
}

func TestSearchLag(t *testing.T) {
	e := newEnv(t, emulator.Config{SearchLag: 2 * time.Minute})
	id := e.create(map[string]any{"email": "new@b.co", "external_id": "n1"})
	found := func() bool {
		ids, res := e.search(query("email", "=", "new@b.co"))
		if (len(ids) == 1) != (res.obj["total_count"] == jsonInt(1)) {
			t.Errorf("data %v disagrees with total_count %v", ids, res.obj["total_count"])
		}
		return len(ids) == 1 && ids[0] == id
	}
	if found() {
		t.Errorf("search found the contact at once, want it hidden for 2m")
	}
	// Reads by id are immediately consistent.
	e.must(200, "GET", "/contacts/"+id, nil)
	e.must(200, "GET", "/contacts/find_by_external_id/n1", nil)
	e.clock.Add(2*time.Minute - time.Second)
	if found() {
		t.Errorf("search found the contact after 1m59s, want it hidden")
	}
	e.clock.Add(time.Second)
	if !found() {
		t.Errorf("search did not find the contact after 2m")
	}

	id2 := e.create(map[string]any{"email": "new2@b.co"})
	if err := e.srv.SetSearchLag(0); err != nil {
		t.Fatal(err)
	}
	if ids, _ := e.search(query("email", "=", "new2@b.co")); !equalIDs(ids, []string{id2}) {
		t.Errorf("after SetSearchLag(0) search = %v, want %s", ids, id2)
	}
	if err := e.srv.SetSearchLag(-1); err == nil {
		t.Errorf("SetSearchLag(-1) = nil, want an error")
	}
}

// jsonInt is how the test client decodes an integer.
func jsonInt(n int) any {
	return json.Number(fmt.Sprint(n))
}
