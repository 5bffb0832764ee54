package emulator_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
)

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  emulator.Config
		want []string // substrings that must all appear in the error
	}{
		{"no tokens", emulator.Config{}, []string{"no tokens"}},
		{"empty token and bad id", emulator.Config{Tokens: map[string]emulator.Workspace{"": {ID: "a b"}}},
			[]string{"token is empty", `invalid workspace id "a b"`}},
		{"shared workspace id", emulator.Config{Tokens: map[string]emulator.Workspace{"t1": {ID: "w"}, "t2": {ID: "w"}}},
			[]string{`workspace id "w" used by another token`}},
		{"everything at once", emulator.Config{
			Tokens: map[string]emulator.Workspace{"t1": {
				ID: "w", RateLimit: -1, Region: "MARS",
				Attributes: []string{"ok", "OK", "bad.name", "email"},
			}},
			SearchLag: -time.Second,
			Latency:   -time.Second,
			Faults: emulator.Faults{
				ServerErrorRate: 0.6, LostResponseRate: 0.6, TimeoutRate: 1.5, RateLimitBurstRate: -2,
				Operations: []string{"createContact"},
			},
		}, []string{
			"negative rate limit", `region "MARS"`, `attribute "OK" listed twice`, `attribute "bad.name"`,
			`attribute "email": 'email' is one of our standard attributes`, "negative search lag",
			"negative latency", "timeout rate 1.5", "rate limit burst rate -2", "add up to",
			`fault operation "createContact"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := emulator.New(tt.cfg)
			if err == nil {
				t.Fatalf("New() = %v, nil; want an error", srv)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New() error = %q, want it to mention %q", err, w)
				}
			}
		})
	}
	t.Run("token never printed", func(t *testing.T) {
		_, err := emulator.New(emulator.Config{Tokens: map[string]emulator.Workspace{"secret-token-value": {ID: ""}}})
		if err == nil || strings.Contains(err.Error(), "secret-token-value") {
			t.Errorf("New() error = %v, want an error that does not contain the token", err)
		}
	})
}

func TestAuth(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	tests := []struct {
		name       string
		opts       []opt
		wantStatus int
	}{
		{"valid token", nil, http.StatusOK},
		{"lowercase scheme", []opt{header("Authorization", "bearer "+tokA)}, http.StatusOK},
		{"missing header", []opt{header("Authorization", "")}, http.StatusUnauthorized},
		{"unknown token", []opt{token(tokUnknown)}, http.StatusUnauthorized},
		{"basic scheme", []opt{header("Authorization", "Basic "+tokA)}, http.StatusUnauthorized},
		{"empty bearer", []opt{header("Authorization", "Bearer ")}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("GET", "/me", nil, tt.opts...)
			if res.status != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", res.status, res.raw, tt.wantStatus)
			}
			_, hasLimit := res.header["X-Ratelimit-Limit"]
			if tt.wantStatus == http.StatusUnauthorized {
				if res.errCode() != "unauthorized" || res.errMessage() != "Access Token Invalid" {
					t.Errorf("error = %s/%s, want unauthorized/Access Token Invalid", res.errCode(), res.errMessage())
				}
				if hasLimit {
					t.Errorf("401 carries X-RateLimit-Limit %q, want no rate-limit headers", res.header.Get("X-RateLimit-Limit"))
				}
			} else if !hasLimit {
				t.Errorf("authenticated response has no X-RateLimit-Limit header")
			}
		})
	}
}

func TestAccept(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	tests := []struct {
		accept string
		want   int
	}{
		{"application/json", http.StatusOK},
		{"application/json; charset=utf-8", http.StatusOK},
		{"*/*", http.StatusOK},
		{"application/*", http.StatusOK},
		{"text/html, application/json;q=0.5", http.StatusOK},
		{"", http.StatusNotAcceptable},
		{"text/html", http.StatusNotAcceptable},
		{"application/json;q=0", http.StatusNotAcceptable},
		{"application/xml", http.StatusNotAcceptable},
	}
	for _, tt := range tests {
		t.Run(tt.accept, func(t *testing.T) {
			res := e.do("GET", "/me", nil, header("Accept", tt.accept))
			if res.status != tt.want {
				t.Fatalf("status = %d (%s), want %d", res.status, res.raw, tt.want)
			}
			if tt.want == http.StatusNotAcceptable && res.errCode() != "not_acceptable" {
				t.Errorf("code = %q, want not_acceptable", res.errCode())
			}
		})
	}
}

func TestVersionHeader(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	tests := []struct {
		name, version, path string
		want                int
		wantCode            string
	}{
		{"absent means 2.16", "", "/me", http.StatusOK, ""},
		{"2.16", "2.16", "/me", http.StatusOK, ""},
		{"2.0", "2.0", "/me", http.StatusOK, ""},
		{"1.4 on /me", "1.4", "/me", http.StatusOK, ""},
		{"Preview", "Preview", "/me", http.StatusOK, ""},
		{"2.17 does not exist", "2.17", "/me", http.StatusBadRequest, "intercom_version_invalid"},
		{"1.5 does not exist", "1.5", "/me", http.StatusBadRequest, "intercom_version_invalid"},
		{"Unstable was renamed", "Unstable", "/me", http.StatusBadRequest, "intercom_version_invalid"},
		{"leading zero", "2.01", "/me", http.StatusBadRequest, "intercom_version_invalid"},
		{"1.x contacts not modelled", "1.4", "/contacts/0123456789abcdef01234567", http.StatusBadRequest, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("GET", tt.path, nil, header("Intercom-Version", tt.version))
			if res.status != tt.want || res.errCode() != tt.wantCode {
				t.Errorf("status, code = %d, %q (%s); want %d, %q", res.status, res.errCode(), res.raw, tt.want, tt.wantCode)
			}
		})
	}
	t.Run("logged", func(t *testing.T) {
		log := e.srv.Requests()
		if got := log[0].Version; got != "2.16" {
			t.Errorf("Request.Version for no header = %q, want 2.16", got)
		}
		if got := log[5].Version; got != "2.17" {
			t.Errorf("Request.Version for an invalid header = %q, want 2.17 as sent", got)
		}
	})
}

func TestMe(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	res := e.must(http.StatusOK, "GET", "/me", nil, token(tokB))
	app, _ := res.obj["app"].(map[string]any)
	if res.str("type") != "admin" || res.str("id") == "" || res.str("email") == "" {
		t.Errorf("admin = %s, want type admin with an id and email", res.raw)
	}
	if app["id_code"] != "ws_b" || app["region"] != "EU" || app["type"] != "app" {
		t.Errorf("app = %v, want id_code ws_b, region EU, type app", app)
	}
	other := e.must(http.StatusOK, "GET", "/me", nil)
	if other.str("id") == res.str("id") {
		t.Errorf("both workspaces have admin id %q, want one admin per workspace", res.str("id"))
	}
}

func TestBodyMustBeJSONObject(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	for _, body := range []string{"", "not json", `["email"]`, `"x"`, `{"email":"a@b.co"} {}`, `{"email":`} {
		t.Run(body, func(t *testing.T) {
			res := e.do("POST", "/contacts", body)
			if res.status != http.StatusBadRequest || res.errCode() != "parameter_invalid" {
				t.Errorf("status, code = %d, %q (%s); want 400, parameter_invalid", res.status, res.errCode(), res.raw)
			}
		})
	}
	if got := len(e.srv.Contacts(tokA)); got != 0 {
		t.Errorf("contacts after bad bodies = %d, want 0", got)
	}
}

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	id := e.create(map[string]any{"email": "a@b.co"})
	tests := []struct{ method, path string }{
		{"GET", "/nope"},
		{"PATCH", "/contacts/" + id},
		{"DELETE", "/contacts/" + id},
		{"GET", "/contacts/search"},
		{"POST", "/contacts/" + id},
		{"PUT", "/data_attributes"},
		{"GET", "/contacts/find_by_external_id"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			res := e.do(tt.method, tt.path, nil)
			if res.status != http.StatusNotFound || res.errCode() != "not_found" {
				t.Errorf("status, code = %d, %q; want 404, not_found", res.status, res.errCode())
			}
		})
	}
	if got := len(e.srv.Contacts(tokA)); got != 1 {
		t.Errorf("contacts = %d, want the 1 created (DELETE is not served)", got)
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	id := e.create(map[string]any{"external_id": "x1"})
	e.must(http.StatusConflict, "POST", "/contacts", map[string]any{"external_id": "x1"})
	e.must(http.StatusUnauthorized, "GET", "/me", nil, token(tokUnknown))
	log := e.srv.Requests()
	if len(log) != 3 {
		t.Fatalf("log has %d entries, want 3", len(log))
	}
	want := []emulator.Request{
		{Seq: 1, Workspace: "ws_a", Method: "POST", Path: "/contacts", Operation: emulator.OpCreateContact, Status: 200, Fault: emulator.FaultNone, ContactID: id, Committed: true},
		{Seq: 2, Workspace: "ws_a", Method: "POST", Path: "/contacts", Operation: emulator.OpCreateContact, Status: 409, Fault: emulator.FaultNone, ContactID: id},
		{Seq: 3, Method: "GET", Path: "/me", Operation: emulator.OpIdentifyAdmin, Status: 401, Fault: emulator.FaultNone},
	}
	for i, got := range log {
		w := want[i]
		if got.Seq != w.Seq || got.Workspace != w.Workspace || got.Method != w.Method || got.Path != w.Path ||
			got.Operation != w.Operation || got.Status != w.Status || got.Fault != w.Fault ||
			got.ContactID != w.ContactID || got.Committed != w.Committed {
			t.Errorf("log[%d] = %+v, want %+v", i, got, w)
		}
		if !got.Time.Equal(start) || got.RequestID == "" || len(got.Token) != 8 {
			t.Errorf("log[%d] time, request id, token = %v, %q, %q; want %v, an id, 8 hex digits", i, got.Time, got.RequestID, got.Token, start)
		}
	}
	if log[0].Token == log[2].Token {
		t.Errorf("known and unknown token both hash to %q", log[0].Token)
	}
	raw, err := json.Marshal(log)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), tokA) || strings.Contains(string(raw), tokUnknown) {
		t.Errorf("request log %s contains a full token", raw)
	}
}

func TestAdminEndpoints(t *testing.T) {
	e := newEnv(t, emulator.Config{})
	id := e.create(map[string]any{"email": "a@b.co", "custom_attributes": map[string]any{"plan": "pro"}})
	admin := func(method, path string, body any) result {
		t.Helper()
		return e.do(method, path, body, header("Authorization", ""), header("Accept", ""))
	}
	decode := func(res result, v any) {
		t.Helper()
		if err := json.Unmarshal(res.raw, v); err != nil {
			t.Fatalf("decode %s: %v", res.raw, err)
		}
	}

	t.Run("contacts", func(t *testing.T) {
		res := admin("GET", "/_emulator/contacts?workspace=ws_a", nil)
		var list []map[string]any
		decode(res, &list)
		if res.status != 200 || len(list) != 1 || list[0]["id"] != id || list[0]["type"] != "contact" {
			t.Errorf("contacts = %d %s, want 200 and the one contact %s", res.status, res.raw, id)
		}
		if res := admin("GET", "/_emulator/contacts?workspace=nope", nil); res.status != 404 {
			t.Errorf("unknown workspace status = %d, want 404", res.status)
		}
	})

	t.Run("requests", func(t *testing.T) {
		var all []emulator.Request
		decode(admin("GET", "/_emulator/requests", nil), &all)
		if len(all) != 1 || all[0].Operation != emulator.OpCreateContact || all[0].ContactID != id {
			t.Errorf("requests = %+v, want the one create (admin calls are not logged)", all)
		}
		var after []emulator.Request
		decode(admin("GET", "/_emulator/requests?after=1", nil), &after)
		if len(after) != 0 {
			t.Errorf("requests after 1 = %+v, want none", after)
		}
	})

	t.Run("faults", func(t *testing.T) {
		res := admin("PUT", "/_emulator/faults", `{"server_error_rate":1,"operations":["ShowContact"]}`)
		var f emulator.Faults
		decode(res, &f)
		if res.status != 200 || f.ServerErrorRate != 1 || !slices.Equal(f.Operations, []string{"ShowContact"}) {
			t.Fatalf("PUT faults = %d %s, want 200 and the new settings", res.status, res.raw)
		}
		if got := e.srv.Faults(); got.ServerErrorRate != 1 {
			t.Errorf("Faults() = %+v after PUT, want server_error_rate 1", got)
		}
		if res := e.do("GET", "/contacts/"+id, nil); res.status < 500 {
			t.Errorf("GET contact with server_error_rate 1 = %d, want 5xx", res.status)
		}
		e.must(200, "GET", "/me", nil) // not a listed operation
		for _, bad := range []string{`{"server_error_rate":2}`, `{"operations":["nope"]}`, `{"bogus":1}`, `nope`} {
			if res := admin("PUT", "/_emulator/faults", bad); res.status != 400 {
				t.Errorf("PUT faults %s = %d, want 400", bad, res.status)
			}
		}
		admin("PUT", "/_emulator/faults", `{}`)
		var cur emulator.Faults
		decode(admin("GET", "/_emulator/faults", nil), &cur)
		if cur.ServerErrorRate != 0 || len(cur.Operations) != 0 {
			t.Errorf("GET faults = %+v, want cleared", cur)
		}
	})

	t.Run("search lag", func(t *testing.T) {
		res := admin("PUT", "/_emulator/search_lag", `{"search_lag":"90s"}`)
		if res.status != 200 || e.srv.SearchLag() != 90*time.Second {
			t.Errorf("PUT search_lag = %d %s, SearchLag() = %v; want 200, 1m30s", res.status, res.raw, e.srv.SearchLag())
		}
		if res := admin("GET", "/_emulator/search_lag", nil); !strings.Contains(string(res.raw), `"1m30s"`) {
			t.Errorf("GET search_lag = %s, want 1m30s", res.raw)
		}
		if res := admin("PUT", "/_emulator/search_lag", `{"search_lag":"-1s"}`); res.status != 400 {
			t.Errorf("negative search lag status = %d, want 400", res.status)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		if res := admin("GET", "/_emulator/nope", nil); res.status != 404 {
			t.Errorf("status = %d, want 404", res.status)
		}
	})
}
