package intercom

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

func TestRequestHeaders(t *testing.T) {
	rec := script(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/contacts/search":
			jsonReply(200, map[string]any{"type": "list", "data": []any{}})(w, r)
		case r.Method == http.MethodGet:
			errReply(404, "not_found", "User Not Found")(w, r)
		default:
			contactReply("6762f0dd1bb69f9f2193bb83", "user", "a@example.com", "", 1)(w, r)
		}
	})
	srv := serve(t, rec)
	c := newTestClient(t, srv.URL, nil, func(c *Config) { c.APIVersion = "2.14" })
	ctx := t.Context()
	if _, err := c.Find(ctx, domain.Identity{Email: "a@example.com", ExternalID: "x1"}); err != nil {
		t.Fatalf("Find: %v", err)
	}
	if _, err := c.Create(ctx, domain.Contact{Role: domain.RoleUser, Email: "a@example.com"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := c.Update(ctx, "6762f0dd1bb69f9f2193bb83", domain.Contact{Name: "A"}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	reqs := rec.Requests()
	if got, want := len(reqs), 4; got != want {
		t.Fatalf("got %d requests, want %d", got, want)
	}
	for _, r := range reqs {
		want := map[string]string{
			"Authorization":    "Bearer " + testToken,
			"Accept":           "application/json",
			"Intercom-Version": "2.14",
			"User-Agent":       "referrer-sync",
		}
		if len(r.Body) > 0 {
			want["Content-Type"] = "application/json"
		} else {
			want["Content-Type"] = ""
		}
		for k, v := range want {
			if got := r.Header.Get(k); got != v {
				t.Errorf("%s %s: header %s = %q, want %q", r.Method, r.Path, k, got, v)
			}
		}
	}
	if got, want := reqs[0].Method+" "+reqs[0].Path, "GET /contacts/find_by_external_id/x1"; got != want {
		t.Errorf("first request %q, want %q", got, want)
	}
}

func TestFindWithHandler(t *testing.T) {
	const (
		userID  = "aaaaaaaaaaaaaaaaaaaaaaa1"
		leadID  = "aaaaaaaaaaaaaaaaaaaaaaa2"
		lead2ID = "aaaaaaaaaaaaaaaaaaaaaaa3"
		mergeID = "aaaaaaaaaaaaaaaaaaaaaaa9"
	)
	searchPages := func(w http.ResponseWriter, r *http.Request) {
		body := decodeBody(t, mustRead(r))
		pag, _ := body["pagination"].(map[string]any)
		switch pag["starting_after"] {
		case nil:
			jsonReply(200, map[string]any{"type": "list", "total_count": 3,
				"data":  []any{contactObj(userID, "user", "a@example.com", "x/1", 10), contactObj(leadID, "lead", "a@example.com", "", 20)},
				"pages": map[string]any{"type": "pages", "page": 1, "per_page": 2, "total_pages": 2, "next": map[string]any{"starting_after": "cur2"}}})(w, r)
		case "cur2":
			jsonReply(200, map[string]any{"type": "list", "total_count": 3,
				"data":  []any{contactObj(lead2ID, "lead", "a@example.com", "", 30)},
				"pages": map[string]any{"type": "pages", "page": 2, "per_page": 2, "total_pages": 2}})(w, r)
		default:
			errReply(400, "parameter_invalid", "bad cursor")(w, r)
		}
	}
	byXID := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/contacts/search":
				searchPages(w, r)
			case status == 200:
				contactReply(userID, "user", "a@example.com", "x/1", 10)(w, r)
			case status == 410:
				w.Header().Set("Link", `</contacts/`+mergeID+`>; rel="canonical"`)
				errReply(410, "contact_merged", "This contact has been merged.")(w, r)
			default:
				errReply(status, "not_found", "User Not Found")(w, r)
			}
		}
	}
	want3 := []domain.Match{
		{ID: userID, Role: domain.RoleUser, Email: "a@example.com", ExternalID: "x/1", CreatedAt: 10},
		{ID: leadID, Role: domain.RoleLead, Email: "a@example.com", CreatedAt: 20},
		{ID: lead2ID, Role: domain.RoleLead, Email: "a@example.com", CreatedAt: 30},
	}
	tests := []struct {
		name      string
		version   string
		handler   http.HandlerFunc
		id        domain.Identity
		want      []domain.Match
		wantPaths []string
	}{
		{"external id found, merged with email pages", "2.16", byXID(200), domain.Identity{Email: "a@example.com", ExternalID: "x/1"}, want3,
			[]string{"GET /contacts/find_by_external_id/x%2F1", "POST /contacts/search", "POST /contacts/search"}},
		{"external id unknown", "2.16", byXID(404), domain.Identity{Email: "a@example.com", ExternalID: "x/1"}, want3,
			[]string{"GET /contacts/find_by_external_id/x%2F1", "POST /contacts/search", "POST /contacts/search"}},
		{"email only", "2.16", byXID(500), domain.Identity{Email: "a@example.com"}, want3,
			[]string{"POST /contacts/search", "POST /contacts/search"}},
		{"merged external id follows the canonical link", "2.16", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/contacts/"+mergeID {
				contactReply(mergeID, "user", "b@example.com", "x/1", 5)(w, r)
				return
			}
			byXID(410)(w, r)
		}, domain.Identity{Email: "a@example.com", ExternalID: "x/1"},
			append([]domain.Match{{ID: mergeID, Role: domain.RoleUser, Email: "b@example.com", ExternalID: "x/1", CreatedAt: 5}}, want3...),
			[]string{"GET /contacts/find_by_external_id/x%2F1", "GET /contacts/" + mergeID, "POST /contacts/search", "POST /contacts/search"}},
		{"before 2.13 external id is searched", "2.12", func(w http.ResponseWriter, r *http.Request) {
			body := decodeBody(t, mustRead(r))
			if q := body["query"].(map[string]any); q["field"] == "external_id" {
				jsonReply(200, map[string]any{"type": "list", "data": []any{contactObj(userID, "user", "a@example.com", "x/1", 10)}})(w, r)
				return
			}
			r.Body = ioNopCloser(mustJSON(body))
			searchPages(w, r)
		}, domain.Identity{Email: "a@example.com", ExternalID: "x/1"}, want3,
			[]string{"POST /contacts/search", "POST /contacts/search", "POST /contacts/search"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := script(tt.handler)
			c := newTestClient(t, serve(t, rec).URL, newFakeClock(), func(c *Config) { c.APIVersion = tt.version })
			got, err := c.Find(t.Context(), tt.id)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Find() = %+v\nwant %+v", got, tt.want)
			}
			var paths []string
			for _, r := range rec.Requests() {
				paths = append(paths, r.Method+" "+r.Path)
			}
			if !slices.Equal(paths, tt.wantPaths) {
				t.Errorf("requests %v, want %v", paths, tt.wantPaths)
			}
		})
	}

	t.Run("search body", func(t *testing.T) {
		rec := script(searchPages)
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		if _, err := c.Find(t.Context(), domain.Identity{Email: "a@example.com"}); err != nil {
			t.Fatal(err)
		}
		reqs := rec.Requests()
		want := []string{
			`{"pagination":{"per_page":150},"query":{"field":"email","operator":"=","value":"a@example.com"}}`,
			`{"pagination":{"per_page":150,"starting_after":"cur2"},"query":{"field":"email","operator":"=","value":"a@example.com"}}`,
		}
		for i, r := range reqs {
			if got := mustJSON(decodeBody(t, r.Body)); i >= len(want) || got != want[i] {
				t.Errorf("search body %d = %s, want %s", i, got, want[min(i, len(want)-1)])
			}
		}
	})

	t.Run("page cap", func(t *testing.T) {
		var n atomic.Int32
		rec := script(func(w http.ResponseWriter, r *http.Request) {
			i := n.Add(1)
			jsonReply(200, map[string]any{"type": "list",
				"data":  []any{contactObj(fmt.Sprintf("%024d", i), "lead", "a@example.com", "", int64(i))},
				"pages": map[string]any{"next": map[string]any{"starting_after": fmt.Sprint("c", i)}}})(w, r)
		})
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		got, err := c.Find(t.Context(), domain.Identity{Email: "a@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != maxSearchPages || len(rec.Requests()) != maxSearchPages {
			t.Errorf("got %d matches in %d requests, want %d in %d", len(got), len(rec.Requests()), maxSearchPages, maxSearchPages)
		}
	})

	t.Run("repeated cursor stops", func(t *testing.T) {
		rec := script(jsonReply(200, map[string]any{"type": "list", "data": []any{contactObj(leadID, "lead", "a@example.com", "", 1)},
			"pages": map[string]any{"next": map[string]any{"starting_after": "same"}}}))
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		got, err := c.Find(t.Context(), domain.Identity{Email: "a@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || len(rec.Requests()) != 2 {
			t.Errorf("got %d matches in %d requests, want 1 in 2", len(got), len(rec.Requests()))
		}
	})

	t.Run("empty identity", func(t *testing.T) {
		rec := script(searchPages)
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		_, err := c.Find(t.Context(), domain.Identity{})
		if got := ports.KindOf(err); got != ports.Permanent {
			t.Errorf("Find(empty) kind = %v (%v), want permanent", got, err)
		}
		if n := len(rec.Requests()); n != 0 {
			t.Errorf("sent %d requests, want 0", n)
		}
	})
}

func TestCreateOutcomes(t *testing.T) {
	const id = "6762f0dd1bb69f9f2193bb83"
	lead := domain.Contact{Role: domain.RoleLead, Email: "a@example.com"}
	tests := []struct {
		name          string
		handlers      []http.HandlerFunc
		want          ports.Created
		wantKind      ports.ErrorKind // 0 = success
		wantUncertain bool
		wantStatus    int
		wantCode      string
		wantRequests  int
	}{
		{"created", []http.HandlerFunc{contactReply(id, "lead", "a@example.com", "", 1)}, ports.Created{ID: id}, 0, false, 0, "", 1},
		{"conflict", []http.HandlerFunc{errReply(409, "conflict", "A contact matching those details already exists with id="+id)},
			ports.Created{ID: id, Existing: true}, 0, false, 0, "", 1},
		{"archived conflict", []http.HandlerFunc{errReply(409, "conflict", "An archived contact matching those details already exists with id="+id)},
			ports.Created{ID: id, Existing: true}, 0, false, 0, "", 1},
		{"unique_user_constraint", []http.HandlerFunc{errReply(409, "unique_user_constraint", "exists with id="+id)},
			ports.Created{ID: id, Existing: true}, 0, false, 0, "", 1},
		{"conflict without id", []http.HandlerFunc{errReply(409, "conflict", "Multiple existing users match this email address")},
			ports.Created{}, ports.Permanent, false, 409, "conflict", 1},
		{"conflict not json", []http.HandlerFunc{func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(409) }},
			ports.Created{}, ports.Permanent, false, 409, "", 1},
		{"bad request", []http.HandlerFunc{errReply(400, "parameter_invalid", "Custom attribute 'nope' does not exist")},
			ports.Created{}, ports.Permanent, false, 400, "parameter_invalid", 1},
		{"unprocessable", []http.HandlerFunc{errReply(422, "data_invalid", "nope")}, ports.Created{}, ports.Permanent, false, 422, "data_invalid", 1},
		{"unauthorized", []http.HandlerFunc{errReply(401, "unauthorized", "Access Token Invalid")}, ports.Created{}, ports.Unauthorized, false, 401, "unauthorized", 1},
		{"forbidden", []http.HandlerFunc{errReply(403, "api_plan_restricted", "Active subscription needed.")}, ports.Created{}, ports.Unauthorized, false, 403, "api_plan_restricted", 1},
		{"server error is uncertain and not retried", []http.HandlerFunc{errReply(500, "server_error", "boom"), contactReply(id, "lead", "", "", 1)},
			ports.Created{}, ports.Transient, true, 500, "server_error", 1},
		{"bad gateway html", []http.HandlerFunc{func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(502)
			_, _ = fmt.Fprint(w, "<html>502</html>")
		}},
			ports.Created{}, ports.Transient, true, 502, "", 1},
		{"request timeout", []http.HandlerFunc{errReply(408, "request_timeout", "slow")}, ports.Created{}, ports.Transient, true, 408, "request_timeout", 1},
		{"lost response is uncertain and not retried", []http.HandlerFunc{lostResponse, contactReply(id, "lead", "", "", 1)},
			ports.Created{}, ports.Transient, true, 0, "", 1},
		{"unreadable success is uncertain", []http.HandlerFunc{jsonReply(200, map[string]any{"type": "contact"})},
			ports.Created{}, ports.Transient, true, 200, "", 1},
		{"rate limited then created", []http.HandlerFunc{errReply(429, "rate_limit_exceeded", "Exceeded rate limit of 167 in 10_seconds"), contactReply(id, "lead", "", "", 1)},
			ports.Created{ID: id}, 0, false, 0, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := script(tt.handlers...)
			c := newTestClient(t, serve(t, rec).URL, newFakeClock(), nil)
			got, err := c.Create(t.Context(), lead)
			if n := len(rec.Requests()); n != tt.wantRequests {
				t.Errorf("sent %d requests, want %d", n, tt.wantRequests)
			}
			if got != tt.want {
				t.Errorf("Create() = %+v, want %+v", got, tt.want)
			}
			if tt.wantKind == 0 {
				if err != nil {
					t.Fatalf("Create() error = %v, want nil", err)
				}
				return
			}
			pe := asPortsError(t, err)
			if pe.Kind != tt.wantKind || pe.Uncertain != tt.wantUncertain || pe.Status != tt.wantStatus || pe.Code != tt.wantCode || pe.Op != OpCreate {
				t.Errorf("Create() error = %+v, want kind %v uncertain %v status %d code %q op create",
					pe, tt.wantKind, tt.wantUncertain, tt.wantStatus, tt.wantCode)
			}
			if !strings.Contains(err.Error(), `intercom "test"`) {
				t.Errorf("error %q does not name the connection", err)
			}
		})
	}
}

func TestCreateRejectsBeforeSending(t *testing.T) {
	tests := []struct {
		name    string
		version string
		ct      domain.Contact
	}{
		{"no role", "2.16", domain.Contact{Email: "a@example.com"}},
		{"unknown role", "2.16", domain.Contact{Role: "admin", Email: "a@example.com"}},
		{"non-integer owner before 2.16", "2.15", domain.Contact{Role: domain.RoleUser, Email: "a@example.com", OwnerID: "abc"}},
		{"non-integer owner on 2.7", "2.7", domain.Contact{Role: domain.RoleUser, Email: "a@example.com", OwnerID: "12.5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := script(contactReply("x", "user", "", "", 1))
			c := newTestClient(t, serve(t, rec).URL, nil, func(c *Config) { c.APIVersion = tt.version })
			_, err := c.Create(t.Context(), tt.ct)
			if pe := asPortsError(t, err); pe.Kind != ports.Permanent {
				t.Errorf("Create() kind = %v, want permanent (%v)", pe.Kind, err)
			}
			if n := len(rec.Requests()); n != 0 {
				t.Errorf("sent %d requests, want 0", n)
			}
			if err := c.Update(t.Context(), "x", tt.ct); tt.ct.OwnerID != "" && ports.KindOf(err) != ports.Permanent {
				t.Errorf("Update() = %v, want permanent", err)
			}
		})
	}
}

func TestCreateBodyAndOwnerIDTyping(t *testing.T) {
	yes := true
	full := domain.Contact{
		Role: domain.RoleUser, Email: "a@example.com", ExternalID: "rf:1", Name: "Ann", Phone: "+351", Avatar: "https://x.test/a.png",
		OwnerID: "321", SignedUpAt: 1700000000, LastSeenAt: 1700000001, Unsubscribed: &yes,
		Custom: map[string]any{"referral_link": "https://r.test/1", "score": int64(3), "vip": true, "ratio": 0.5},
	}
	tests := []struct {
		name, version string
		ct            domain.Contact
		want          string
	}{
		{"2.16 string owner", "2.16", full,
			`{"avatar":"https://x.test/a.png","custom_attributes":{"ratio":0.5,"referral_link":"https://r.test/1","score":3,"vip":true},"email":"a@example.com","external_id":"rf:1","last_seen_at":1700000001,"name":"Ann","owner_id":"321","phone":"+351","role":"user","signed_up_at":1700000000,"unsubscribed_from_emails":true}`},
		{"2.15 integer owner", "2.15", full,
			`{"avatar":"https://x.test/a.png","custom_attributes":{"ratio":0.5,"referral_link":"https://r.test/1","score":3,"vip":true},"email":"a@example.com","external_id":"rf:1","last_seen_at":1700000001,"name":"Ann","owner_id":321,"phone":"+351","role":"user","signed_up_at":1700000000,"unsubscribed_from_emails":true}`},
		{"minimal lead omits unset fields", "2.16", domain.Contact{Role: domain.RoleLead, Email: "a@example.com"},
			`{"email":"a@example.com","role":"lead"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := script(contactReply("6762f0dd1bb69f9f2193bb83", "user", "", "", 1))
			c := newTestClient(t, serve(t, rec).URL, nil, func(c *Config) { c.APIVersion = tt.version })
			if _, err := c.Create(t.Context(), tt.ct); err != nil {
				t.Fatal(err)
			}
			reqs := rec.Requests()
			if len(reqs) != 1 {
				t.Fatalf("sent %d requests, want 1", len(reqs))
			}
			if got := mustJSON(decodeBody(t, reqs[0].Body)); got != tt.want {
				t.Errorf("body = %s\nwant   %s", got, tt.want)
			}
			if got, want := reqs[0].Method+" "+reqs[0].Path, "POST /contacts"; got != want {
				t.Errorf("request %q, want %q", got, want)
			}
		})
	}
}

func TestUpdateWithHandler(t *testing.T) {
	const id = "6762f0dd1bb69f9f2193bb83"
	name := domain.Contact{Role: domain.RoleUser, Name: "Ann", Custom: map[string]any{"referral_link": "u"}}
	tests := []struct {
		name         string
		handlers     []http.HandlerFunc
		ct           domain.Contact
		wantKind     ports.ErrorKind
		wantRequests int
		wantBody     string
	}{
		{"sends set fields without role", []http.HandlerFunc{contactReply(id, "user", "", "", 1)}, name, 0, 1,
			`{"custom_attributes":{"referral_link":"u"},"name":"Ann"}`},
		{"nothing set sends nothing", []http.HandlerFunc{contactReply(id, "user", "", "", 1)}, domain.Contact{Role: domain.RoleLead}, 0, 0, ""},
		{"not found", []http.HandlerFunc{errReply(404, "not_found", "User Not Found")}, name, ports.NotFound, 1, ""},
		{"merged away", []http.HandlerFunc{errReply(410, "contact_merged", "This contact has been merged.")}, name, ports.NotFound, 1, ""},
		{"server errors retried", []http.HandlerFunc{errReply(503, "service_unavailable", "x"), lostResponse, contactReply(id, "user", "", "", 1)}, name, 0, 3, ""},
		{"server errors exhaust attempts", []http.HandlerFunc{errReply(500, "server_error", "x")}, name, ports.Transient, 4, ""},
		{"unknown attribute", []http.HandlerFunc{errReply(400, "parameter_invalid", "Custom attribute 'x' does not exist")}, name, ports.Permanent, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := script(tt.handlers...)
			c := newTestClient(t, serve(t, rec).URL, newFakeClock(), nil)
			err := c.Update(t.Context(), id, tt.ct)
			reqs := rec.Requests()
			if len(reqs) != tt.wantRequests {
				t.Errorf("sent %d requests, want %d", len(reqs), tt.wantRequests)
			}
			if got := ports.KindOf(err); (err == nil) != (tt.wantKind == 0) || err != nil && got != tt.wantKind {
				t.Errorf("Update() = %v, want kind %v", err, tt.wantKind)
			}
			for _, r := range reqs {
				if got, want := r.Method+" "+r.Path, "PUT /contacts/"+id; got != want {
					t.Errorf("request %q, want %q", got, want)
				}
				if _, ok := decodeBody(t, r.Body)["role"]; ok {
					t.Errorf("update body %s contains role", r.Body)
				}
			}
			if tt.wantBody != "" && len(reqs) > 0 {
				if got := mustJSON(decodeBody(t, reqs[0].Body)); got != tt.wantBody {
					t.Errorf("body = %s, want %s", got, tt.wantBody)
				}
			}
		})
	}
	t.Run("empty id", func(t *testing.T) {
		c := newTestClient(t, "http://127.0.0.1:1", nil, nil)
		if err := c.Update(t.Context(), " ", name); ports.KindOf(err) != ports.Permanent {
			t.Errorf("Update(\"\") = %v, want permanent", err)
		}
	})
}

func TestRetriesOnRepeatableRequests(t *testing.T) {
	empty := jsonReply(200, map[string]any{"type": "list", "data": []any{}})
	tests := []struct {
		name          string
		handlers      []http.HandlerFunc
		maxAttempts   int
		wantErr       ports.ErrorKind
		wantRequests  int
		wantBackoffs  int
		wantUncertain bool
	}{
		{"5xx then success", []http.HandlerFunc{errReply(502, "server_error", "a"), errReply(503, "service_unavailable", "b"), empty}, 4, 0, 3, 2, false},
		{"408 then success", []http.HandlerFunc{errReply(408, "request_timeout", "a"), empty}, 4, 0, 2, 1, false},
		{"lost response then success", []http.HandlerFunc{lostResponse, empty}, 4, 0, 2, 1, false},
		{"always failing", []http.HandlerFunc{errReply(500, "server_error", "a")}, 3, ports.Transient, 3, 2, false},
		{"not retried on 400", []http.HandlerFunc{errReply(400, "parameter_invalid", "a"), empty}, 4, ports.Permanent, 1, 0, false},
		{"single attempt", []http.HandlerFunc{errReply(500, "server_error", "a"), empty}, 1, ports.Transient, 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := script(tt.handlers...)
			clock := newFakeClock()
			c := newTestClient(t, serve(t, rec).URL, clock, func(c *Config) { c.MaxAttempts = tt.maxAttempts })
			_, err := c.Find(t.Context(), domain.Identity{Email: "a@example.com"})
			if n := len(rec.Requests()); n != tt.wantRequests {
				t.Errorf("sent %d requests, want %d", n, tt.wantRequests)
			}
			if n := len(clock.Slept()); n != tt.wantBackoffs {
				t.Errorf("backed off %d times, want %d", n, tt.wantBackoffs)
			}
			for i, d := range clock.Slept() {
				ceiling := min(backoffBase<<i, backoffCap)
				if d < ceiling/2 || d > ceiling {
					t.Errorf("backoff %d = %s, want within [%s, %s]", i, d, ceiling/2, ceiling)
				}
			}
			if tt.wantErr == 0 {
				if err != nil {
					t.Fatalf("Find() = %v, want nil", err)
				}
				return
			}
			if pe := asPortsError(t, err); pe.Kind != tt.wantErr || pe.Uncertain != tt.wantUncertain || pe.Op != OpSearch {
				t.Errorf("Find() error %+v, want kind %v uncertain %v op search", pe, tt.wantErr, tt.wantUncertain)
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	const id = "6762f0dd1bb69f9f2193bb83"
	t.Run("search times out then succeeds", func(t *testing.T) {
		rec := script(hang(t), jsonReply(200, map[string]any{"type": "list", "data": []any{contactObj(id, "lead", "a@example.com", "", 1)}}))
		c := newTestClient(t, serve(t, rec).URL, newFakeClock(), func(c *Config) { c.Timeout = 100 * time.Millisecond })
		got, err := c.Find(t.Context(), domain.Identity{Email: "a@example.com"})
		if err != nil || len(got) != 1 || len(rec.Requests()) != 2 {
			t.Errorf("Find() = %v, %v after %d requests; want 1 match after 2", got, err, len(rec.Requests()))
		}
	})
	t.Run("create times out as uncertain", func(t *testing.T) {
		rec := script(hang(t), contactReply(id, "lead", "", "", 1))
		c := newTestClient(t, serve(t, rec).URL, newFakeClock(), func(c *Config) { c.Timeout = 100 * time.Millisecond })
		_, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
		pe := asPortsError(t, err)
		if pe.Kind != ports.Transient || !pe.Uncertain || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Create() = %+v, want uncertain transient wrapping context.DeadlineExceeded", pe)
		}
		if n := len(rec.Requests()); n != 1 {
			t.Errorf("sent %d requests, want 1", n)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		rec := script(hang(t))
		c := newTestClient(t, serve(t, rec).URL, newFakeClock(), nil)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
		if !errors.Is(err, context.DeadlineExceeded) || ports.KindOf(err) != ports.Transient || len(rec.Requests()) != 1 {
			t.Errorf("Find() = %v after %d requests, want one transient attempt wrapping the deadline", err, len(rec.Requests()))
		}
	})
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

func TestDialErrors(t *testing.T) {
	base := closedURL(t)
	var mu sync.Mutex
	var observed []string
	c := newTestClient(t, base, newFakeClock(), func(c *Config) {
		c.MaxAttempts = 3
		c.Observe = func(op string, status int, _ time.Duration) {
			mu.Lock()
			observed = append(observed, op+":"+strconv.Itoa(status))
			mu.Unlock()
		}
	})
	_, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
	pe := asPortsError(t, err)
	if pe.Kind != ports.Transient || pe.Uncertain {
		t.Errorf("Create() = %+v, want a certain transient error (nothing was sent)", pe)
	}
	if want := []string{"create:0", "create:0", "create:0"}; !slices.Equal(observed, want) {
		t.Errorf("observed %v, want %v (a create that was never sent is retried)", observed, want)
	}
}

func TestRateLimiting(t *testing.T) {
	const id = "6762f0dd1bb69f9f2193bb83"
	tooMany := func(clock *fakeClock, resetIn time.Duration) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-RateLimit-Limit", "167")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(clock.Now().Add(resetIn).Unix(), 10))
			errReply(429, "rate_limit_exceeded", "Exceeded rate limit of 167 in 10_seconds")(w, r)
		}
	}
	created := contactReply(id, "lead", "", "", 1)
	tests := []struct {
		name         string
		handlers     func(*fakeClock) []http.HandlerFunc
		budget       time.Duration
		wantErr      bool
		minSlept     time.Duration
		maxSlept     time.Duration
		wantRequests int
	}{
		{"waits for the reset then succeeds", func(c *fakeClock) []http.HandlerFunc { return []http.HandlerFunc{tooMany(c, 3*time.Second), created} },
			15 * time.Second, false, 3 * time.Second, 3*time.Second + rateLimitJitter, 2},
		{"two windows within budget", func(c *fakeClock) []http.HandlerFunc {
			return []http.HandlerFunc{tooMany(c, 4*time.Second), tooMany(c, 4*time.Second), created}
		}, 15 * time.Second, false, 8 * time.Second, 8*time.Second + 2*rateLimitJitter, 3},
		{"wait beyond budget", func(c *fakeClock) []http.HandlerFunc { return []http.HandlerFunc{tooMany(c, 20*time.Second), created} },
			15 * time.Second, true, 0, 0, 1},
		{"second window exceeds budget", func(c *fakeClock) []http.HandlerFunc {
			return []http.HandlerFunc{tooMany(c, 8*time.Second), tooMany(c, 8*time.Second), created}
		}, 15 * time.Second, true, 8 * time.Second, 8*time.Second + rateLimitJitter, 2},
		{"no headers uses the default wait", func(_ *fakeClock) []http.HandlerFunc {
			return []http.HandlerFunc{errReply(429, "rate_limit_exceeded", "x"), created}
		}, 15 * time.Second, false, defaultRateLimitWait, defaultRateLimitWait + rateLimitJitter, 2},
		{"skewed reset is capped", func(c *fakeClock) []http.HandlerFunc { return []http.HandlerFunc{tooMany(c, time.Hour), created} },
			2 * time.Minute, false, maxResetWait, maxResetWait + rateLimitJitter, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			rec := script(tt.handlers(clock)...)
			c := newTestClient(t, serve(t, rec).URL, clock, func(c *Config) { c.MaxRateLimitWait = tt.budget })
			got, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
			if n := len(rec.Requests()); n != tt.wantRequests {
				t.Errorf("sent %d requests, want %d", n, tt.wantRequests)
			}
			if slept := clock.Total(); slept < tt.minSlept || slept > tt.maxSlept {
				t.Errorf("waited %s, want within [%s, %s]", slept, tt.minSlept, tt.maxSlept)
			}
			if !tt.wantErr {
				if err != nil || got.ID != id {
					t.Fatalf("Create() = %+v, %v; want id %s", got, err, id)
				}
				return
			}
			pe := asPortsError(t, err)
			if pe.Kind != ports.RateLimited || pe.Uncertain || pe.RetryAfter <= 0 || pe.Code != "rate_limit_exceeded" {
				t.Errorf("Create() error %+v, want certain rate_limited with RetryAfter and the Intercom code", pe)
			}
		})
	}

	t.Run("deadline shorter than the wait", func(t *testing.T) {
		clock := newFakeClock()
		rec := script(tooMany(clock, 5*time.Second), created)
		c := newTestClient(t, serve(t, rec).URL, clock, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
		if pe := asPortsError(t, err); pe.Kind != ports.RateLimited || len(clock.Slept()) != 0 || pe.RetryAfter < 3*time.Second {
			t.Errorf("Create() = %+v after sleeping %v, want rate_limited with RetryAfter about 5s, without waiting", pe, clock.Slept())
		}
	})

	t.Run("spent window is waited out before sending", func(t *testing.T) {
		clock := newFakeClock()
		var hooked []string
		var mu sync.Mutex
		rec := script(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-RateLimit-Limit", "83")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(clock.Now().Add(6*time.Second).Unix(), 10))
			created(w, r)
		}, created)
		c := newTestClient(t, serve(t, rec).URL, clock, func(c *Config) {
			c.RateLimit = func(limit, remaining int, reset time.Time) {
				mu.Lock()
				hooked = append(hooked, fmt.Sprint(limit, "/", remaining, "/", reset.Sub(clock.Now()) > 0))
				mu.Unlock()
			}
		})
		for range 2 {
			if _, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com"}); err != nil {
				t.Fatal(err)
			}
		}
		if s := clock.Total(); s < 6*time.Second || s > 6*time.Second+rateLimitJitter {
			t.Errorf("waited %s before the second create, want about 6s", s)
		}
		if want := []string{"83/0/true"}; !slices.Equal(hooked, want) {
			t.Errorf("RateLimit hook got %v, want %v", hooked, want)
		}
		limit, remaining, _, ok := c.RateLimitStatus()
		if !ok || limit != 83 || remaining != 0 {
			t.Errorf("RateLimitStatus() = %d, %d, %v; want 83, 0, true", limit, remaining, ok)
		}
	})

	t.Run("spent window beyond budget sends nothing", func(t *testing.T) {
		clock := newFakeClock()
		rec := script(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(clock.Now().Add(30*time.Second).Unix(), 10))
			created(w, r)
		})
		c := newTestClient(t, serve(t, rec).URL, clock, nil)
		if _, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com"}); err != nil {
			t.Fatal(err)
		}
		_, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
		if pe := asPortsError(t, err); pe.Kind != ports.RateLimited || pe.RetryAfter < 29*time.Second || pe.Uncertain {
			t.Errorf("Create() = %+v, want rate_limited with RetryAfter about 30s", pe)
		}
		if n := len(rec.Requests()); n != 1 {
			t.Errorf("sent %d requests, want 1", n)
		}
	})
}

func TestObserve(t *testing.T) {
	const id = "6762f0dd1bb69f9f2193bb83"
	rec := script(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/contacts/search":
			jsonReply(200, map[string]any{"type": "list", "data": []any{}})(w, r)
		case strings.HasPrefix(r.URL.Path, "/contacts/find_by_external_id/"):
			errReply(404, "not_found", "User Not Found")(w, r)
		case r.URL.Path == "/me":
			jsonReply(200, map[string]any{"type": "admin", "id": "1"})(w, r)
		case r.URL.Path == "/data_attributes" && r.Method == http.MethodGet:
			jsonReply(200, map[string]any{"type": "list", "data": []any{}})(w, r)
		case r.URL.Path == "/data_attributes":
			jsonReply(200, map[string]any{"type": "data_attribute", "name": "x"})(w, r)
		case r.Method == http.MethodPut:
			errReply(404, "not_found", "User Not Found")(w, r)
		default:
			contactReply(id, "lead", "", "", 1)(w, r)
		}
	})
	var mu sync.Mutex
	var got []string
	c := newTestClient(t, serve(t, rec).URL, nil, func(c *Config) {
		c.Observe = func(op string, status int, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if d <= 0 {
				t.Errorf("Observe(%s) duration %s, want > 0", op, d)
			}
			got = append(got, fmt.Sprint(op, " ", status))
		}
	})
	ctx := t.Context()
	_, _ = c.Find(ctx, domain.Identity{Email: "a@example.com", ExternalID: "x"})
	_, _ = c.Create(ctx, domain.Contact{Role: domain.RoleLead, Email: "a@example.com"})
	_ = c.Update(ctx, id, domain.Contact{Name: "A"})
	_, _ = c.Me(ctx)
	_, _ = c.Attributes(ctx)
	_ = c.CreateAttribute(ctx, "x", "string", "")
	want := []string{"find_by_external_id 404", "search 200", "create 200", "update 404", "me 200", "list_attributes 200", "create_attribute 200"}
	if !slices.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
}

func TestWorkspaceCallsWithHandler(t *testing.T) {
	attrs := jsonReply(200, map[string]any{"type": "list", "data": []any{
		map[string]any{"type": "data_attribute", "model": "contact", "name": "email", "full_name": "email", "data_type": "string", "custom": false, "api_writable": true},
		map[string]any{"type": "data_attribute", "model": "contact", "name": "referral_link", "full_name": "custom_attributes.referral_link", "label": "Referral link", "data_type": "string", "custom": true, "api_writable": true},
		map[string]any{"type": "data_attribute", "model": "contact", "name": "old", "full_name": "custom_attributes.old", "data_type": "string", "custom": true, "archived": true},
		map[string]any{"type": "data_attribute", "model": "company", "name": "plan", "data_type": "string", "custom": true},
	}})
	t.Run("me", func(t *testing.T) {
		rec := script(jsonReply(200, map[string]any{"type": "admin", "id": "991267459", "name": "Ann", "email": "ann@example.com",
			"app": map[string]any{"type": "app", "id_code": "ws1", "name": "ACME", "region": "EU"}}))
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		got, err := c.Me(t.Context())
		want := Admin{ID: "991267459", Name: "Ann", Email: "ann@example.com", WorkspaceID: "ws1", WorkspaceName: "ACME", Region: "EU"}
		if err != nil || got != want {
			t.Errorf("Me() = %+v, %v; want %+v", got, err, want)
		}
	})
	t.Run("me numeric id", func(t *testing.T) {
		c := newTestClient(t, serve(t, script(jsonReply(200, map[string]any{"type": "admin", "id": 42}))).URL, nil, nil)
		if got, err := c.Me(t.Context()); err != nil || got.ID != "42" {
			t.Errorf("Me() = %+v, %v; want id 42", got, err)
		}
	})
	t.Run("me wrong host is permanent", func(t *testing.T) {
		c := newTestClient(t, serve(t, script(errReply(404, "not_found", "Not Found"))).URL, nil, nil)
		if _, err := c.Me(t.Context()); ports.KindOf(err) != ports.Permanent {
			t.Errorf("Me() = %v, want permanent", err)
		}
	})
	t.Run("attributes", func(t *testing.T) {
		rec := script(attrs)
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		got, err := c.Attributes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, a := range got {
			names = append(names, a.Name)
		}
		if want := []string{"email", "referral_link", "old"}; !slices.Equal(names, want) {
			t.Errorf("Attributes() names %v, want %v", names, want)
		}
		if want := (Attribute{Name: "referral_link", FullName: "custom_attributes.referral_link", Label: "Referral link", DataType: "string", Custom: true, APIWritable: true}); got[1] != want {
			t.Errorf("Attributes()[1] = %+v, want %+v", got[1], want)
		}
		if r := rec.Requests()[0]; r.Method != "GET" || r.Path != "/data_attributes" || r.Query != "model=contact" {
			t.Errorf("request %s %s?%s, want GET /data_attributes?model=contact", r.Method, r.Path, r.Query)
		}
	})
	exists := errReply(400, "parameter_invalid", "You already have 'referral_link' in your people data.")
	tests := []struct {
		name, attr, dataType string
		handlers             []http.HandlerFunc
		wantKind             ports.ErrorKind
		wantRequests         int
	}{
		{"created", "referral_link", "string", []http.HandlerFunc{jsonReply(200, map[string]any{"type": "data_attribute", "name": "referral_link"})}, 0, 1},
		{"already exists", "referral_link", "string", []http.HandlerFunc{exists, attrs}, 0, 2},
		{"exists with another type", "referral_link", "integer", []http.HandlerFunc{exists, attrs}, ports.Permanent, 2},
		{"exists archived", "old", "string", []http.HandlerFunc{exists, attrs}, ports.Permanent, 2},
		{"standard attribute", "email", "string", []http.HandlerFunc{errReply(400, "parameter_invalid", "'email' is one of our standard attributes, please use a different name"), attrs}, ports.Permanent, 2},
		{"refused and absent", "nope", "string", []http.HandlerFunc{errReply(400, "parameter_invalid", "You already have 'nope' in your company data."), attrs}, ports.Permanent, 2},
		{"refused, list unavailable", "nope", "string", []http.HandlerFunc{exists, errReply(500, "server_error", "x")}, ports.Transient, 2 + 3},
		{"unauthorized", "x", "string", []http.HandlerFunc{errReply(401, "unauthorized", "Access Token Invalid")}, ports.Unauthorized, 1},
		{"invalid type", "x", "options", nil, ports.Permanent, 0},
		{"empty name", "", "string", nil, ports.Permanent, 0},
	}
	for _, tt := range tests {
		t.Run("create attribute "+tt.name, func(t *testing.T) {
			rec := script(append(tt.handlers, errReply(500, "server_error", "unexpected"))...)
			c := newTestClient(t, serve(t, rec).URL, newFakeClock(), nil)
			err := c.CreateAttribute(t.Context(), tt.attr, tt.dataType, "desc")
			if (err == nil) != (tt.wantKind == 0) || err != nil && ports.KindOf(err) != tt.wantKind {
				t.Errorf("CreateAttribute() = %v, want kind %v", err, tt.wantKind)
			}
			reqs := rec.Requests()
			if len(reqs) != tt.wantRequests {
				t.Errorf("sent %d requests, want %d", len(reqs), tt.wantRequests)
			}
			if len(reqs) > 0 {
				want := fmt.Sprintf(`{"data_type":%q,"description":"desc","model":"contact","name":%q}`, tt.dataType, tt.attr)
				if got := mustJSON(decodeBody(t, reqs[0].Body)); got != want {
					t.Errorf("body %s, want %s", got, want)
				}
			}
		})
	}
}

func TestMarker(t *testing.T) {
	const id = "6762f0dd1bb69f9f2193bb83"
	withMarker := func(c *Config) { c.MarkerAttribute = "rf_event" }
	t.Run("create stores it, update does not", func(t *testing.T) {
		rec := script(contactReply(id, "lead", "", "", 1))
		c := newTestClient(t, serve(t, rec).URL, nil, withMarker)
		custom := map[string]any{"referral_link": "u"}
		ct := domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Custom: custom, Marker: "ev-1"}
		if _, err := c.Create(t.Context(), ct); err != nil {
			t.Fatal(err)
		}
		if err := c.Update(t.Context(), id, ct.ForUpdate()); err != nil {
			t.Fatal(err)
		}
		if err := c.Update(t.Context(), id, domain.Contact{Marker: "ev-2"}); err != nil {
			t.Fatal(err)
		}
		reqs := rec.Requests()
		if len(reqs) != 2 {
			t.Fatalf("sent %d requests, want 2 (a marker alone is nothing to update)", len(reqs))
		}
		if got, want := mustJSON(decodeBody(t, reqs[0].Body)), `{"custom_attributes":{"referral_link":"u","rf_event":"ev-1"},"email":"a@example.com","role":"lead"}`; got != want {
			t.Errorf("create body %s, want %s", got, want)
		}
		if got, want := mustJSON(decodeBody(t, reqs[1].Body)), `{"custom_attributes":{"referral_link":"u"},"email":"a@example.com"}`; got != want {
			t.Errorf("update body %s, want %s", got, want)
		}
		if len(custom) != 1 {
			t.Errorf("Create changed the caller's custom attributes: %v", custom)
		}
	})
	t.Run("ignored without an attribute", func(t *testing.T) {
		rec := script(contactReply(id, "lead", "", "", 1))
		c := newTestClient(t, serve(t, rec).URL, nil, nil)
		if _, err := c.Create(t.Context(), domain.Contact{Role: domain.RoleLead, Email: "a@example.com", Marker: "ev-1"}); err != nil {
			t.Fatal(err)
		}
		if got, want := mustJSON(decodeBody(t, rec.Requests()[0].Body)), `{"email":"a@example.com","role":"lead"}`; got != want {
			t.Errorf("create body %s, want %s", got, want)
		}
		if _, err := c.Find(t.Context(), domain.Identity{Marker: "ev-1"}); ports.KindOf(err) != ports.Permanent {
			t.Errorf("Find(marker only) = %v, want permanent: there is nothing to search by", err)
		}
	})
	t.Run("find searches by it and reports it", func(t *testing.T) {
		rec := script(func(w http.ResponseWriter, r *http.Request) {
			q := decodeBody(t, mustRead(r))["query"].(map[string]any)
			var data []any
			switch q["field"] {
			case "email":
				data = []any{contactObj("aaaaaaaaaaaaaaaaaaaaaaa1", "lead", "a@example.com", "", 1)}
			case "custom_attributes.rf_event":
				o := contactObj("aaaaaaaaaaaaaaaaaaaaaaa2", "lead", "b@example.com", "", 2)
				o["custom_attributes"] = map[string]any{"rf_event": q["value"], "other": map[string]any{"x": 1}}
				data = []any{o}
			}
			jsonReply(200, map[string]any{"type": "list", "data": data})(w, r)
		})
		c := newTestClient(t, serve(t, rec).URL, nil, withMarker)
		got, err := c.Find(t.Context(), domain.Identity{Email: "a@example.com", Marker: "ev-9"})
		want := []domain.Match{
			{ID: "aaaaaaaaaaaaaaaaaaaaaaa1", Role: domain.RoleLead, Email: "a@example.com", CreatedAt: 1},
			{ID: "aaaaaaaaaaaaaaaaaaaaaaa2", Role: domain.RoleLead, Email: "b@example.com", CreatedAt: 2, Marker: "ev-9"},
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Find() = %+v, %v; want %+v", got, err, want)
		}
		got, err = c.Find(t.Context(), domain.Identity{Marker: "ev-9"})
		if err != nil || len(got) != 1 || got[0].Marker != "ev-9" {
			t.Errorf("Find(marker only) = %+v, %v; want the marked contact", got, err)
		}
	})
}
