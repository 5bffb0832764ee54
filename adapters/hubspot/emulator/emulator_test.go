package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot/emulator"
)

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := emulator.New(emulator.Config{
		Tokens: map[string]emulator.Account{
			"a b": {ID: 0},
			"t1":  {ID: 5, RateLimit: -1, Properties: []string{"Bad-Name", "email", "x"}, UniqueProperties: []string{"x"}},
			"t2":  {ID: 5, Interval: time.Microsecond},
		},
		SearchLag: -time.Second,
		Latency:   -time.Second,
		Faults:    emulator.Faults{ServerErrorRate: 0.6, LostResponseRate: 0.6, Operations: []string{"nope"}},
	})
	if err == nil {
		t.Fatal("New() = nil error")
	}
	for _, want := range []string{
		"negative search lag", "negative latency", "add up to", `fault operation "nope"`,
		"white space", "account id 0 is not positive", "negative rate limit", `"Bad-Name" is not a valid internal name`,
		`"email" is one of HubSpot's default properties`, `"x" listed twice`, "account id 5 used by another token", "is not at least 1ms",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := emulator.New(emulator.Config{}); err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Errorf("New(empty) = %v, want no tokens", err)
	}
}

func TestIntervalRateLimit(t *testing.T) {
	e := newEnv(t, defaultConfig())
	check := func(r result, status int, remaining, dailyRemaining string) {
		t.Helper()
		h := r.header
		if r.status != status || h.Get("X-HubSpot-RateLimit-Max") != "3" || h.Get("X-HubSpot-RateLimit-Remaining") != remaining ||
			h.Get("X-HubSpot-RateLimit-Interval-Milliseconds") != "10000" || h.Get("X-HubSpot-RateLimit-Daily") != "5" ||
			h.Get("X-HubSpot-RateLimit-Daily-Remaining") != dailyRemaining {
			t.Errorf("status %d headers %v; want %d, remaining %s, daily remaining %s", r.status, h, status, remaining, dailyRemaining)
		}
	}
	for i, want := range []string{"2", "1", "0"} {
		check(e.do("POST", contacts, props("email", fmt.Sprintf("p%d@example.com", i)), tokB), 201, want, fmt.Sprint(4-i))
	}
	r := e.do("POST", contacts, props("email", "over@example.com"), tokB)
	check(r, 429, "0", "2")
	if r.str("errorType") != "RATE_LIMIT" || r.str("policyName") != "TEN_SECONDLY_ROLLING" || r.str("status") != "error" {
		t.Errorf("429 body = %s", r.body)
	}
	if n := len(e.srv.Contacts(tokB)); n != 3 {
		t.Errorf("contacts = %d, want 3: a 429 must not apply", n)
	}
	// Search has its own limit and leaves the interval alone.
	if r := e.do("POST", contacts+"/search", map[string]any{}, tokB); r.status != 200 {
		t.Errorf("search while the interval is spent = %d, want 200", r.status)
	}
	// An unlimited token announces the largest limit.
	if got := e.must(200, "GET", "/crm/v3/properties/contacts", nil).header.Get("X-HubSpot-RateLimit-Max"); got != "2147483647" {
		t.Errorf("unlimited Max = %q", got)
	}
	e.clock.Add(6 * time.Second) // 9 s into the interval
	check(e.do("GET", "/crm/v3/properties/contacts", nil, tokB), 429, "0", "2")
	e.clock.Add(time.Second) // the next interval
	check(e.do("GET", "/crm/v3/properties/contacts", nil, tokB), 200, "2", "1")
	check(e.do("GET", "/crm/v3/properties/contacts", nil, tokB), 200, "1", "0")
	// The daily budget is spent.
	r = e.do("GET", "/crm/v3/properties/contacts", nil, tokB)
	if r.status != 429 || r.str("policyName") != "DAILY" || r.str("message") != "You have reached your daily limit." {
		t.Errorf("over the daily limit = %d %s", r.status, r.body)
	}
	e.clock.Add(24 * time.Hour)
	if r := e.do("GET", "/crm/v3/properties/contacts", nil, tokB); r.status != 200 {
		t.Errorf("next day = %d, want 200", r.status)
	}
}

func TestSearchRateLimit(t *testing.T) {
	e := newEnv(t, defaultConfig())
	for i, want := range []int{200, 200, 429} {
		r := e.do("POST", contacts+"/search", map[string]any{}, tokB)
		if r.status != want {
			t.Errorf("search %d = %d, want %d", i, r.status, want)
		}
		if r.header.Get("X-HubSpot-RateLimit-Remaining") != "" {
			t.Errorf("search %d carries rate-limit headers", i)
		}
		if want == 429 && (r.str("policyName") != "SECONDLY" || r.str("errorType") != "RATE_LIMIT") {
			t.Errorf("search 429 body = %s", r.body)
		}
	}
	e.clock.Add(time.Second)
	if r := e.do("POST", contacts+"/search", map[string]any{}, tokB); r.status != 200 {
		t.Errorf("next second = %d, want 200", r.status)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name          string
		faults        emulator.Faults
		wantFault     emulator.Fault
		wantApplied   bool
		wantTransport bool // the response never arrives
		wantStatus    int  // when it arrives: 0 means any 5xx
	}{
		{"server error does not apply", emulator.Faults{ServerErrorRate: 1}, emulator.FaultServerError, false, false, 0},
		{"lost response applies", emulator.Faults{LostResponseRate: 1}, emulator.FaultLost, true, true, 0},
		{"timeout applies", emulator.Faults{TimeoutRate: 1}, emulator.FaultTimeout, true, true, 0},
		{"burst refuses", emulator.Faults{RateLimitBurstRate: 1}, emulator.FaultRateLimit, false, false, 429},
		{"other operations only", emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpGetContact}}, emulator.FaultNone, true, false, 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Faults = tt.faults
			e := newEnv(t, cfg)
			if tt.faults.TimeoutRate > 0 {
				e.hs.Client().Timeout = 200 * time.Millisecond
			}
			r := e.do("POST", contacts, props("email", "a@example.com"), tokA)
			if (r.err != nil) != tt.wantTransport {
				t.Fatalf("transport error = %v, want one: %v", r.err, tt.wantTransport)
			}
			if !tt.wantTransport {
				if tt.wantStatus == 0 && r.status < 500 || tt.wantStatus != 0 && r.status != tt.wantStatus {
					t.Errorf("status = %d, want %d (0: any 5xx)", r.status, tt.wantStatus)
				}
			}
			if got := len(e.srv.Contacts(tokA)) == 1; got != tt.wantApplied {
				t.Errorf("applied = %v, want %v", got, tt.wantApplied)
			}
			reqs := e.srv.Requests()
			if len(reqs) != 1 || reqs[0].Fault != tt.wantFault || reqs[0].Committed != tt.wantApplied || reqs[0].Operation != emulator.OpCreateContact {
				t.Errorf("request log = %+v", reqs)
			}
		})
	}
}

func TestServerErrorBodies(t *testing.T) {
	cfg := defaultConfig()
	cfg.Faults = emulator.Faults{ServerErrorRate: 1}
	e := newEnv(t, cfg)
	seen := map[int]bool{}
	for range 40 {
		r := e.do("GET", contacts+"/1", nil, tokA)
		seen[r.status] = true
	}
	for _, s := range []int{500, 502, 503, 504} {
		if !seen[s] {
			t.Errorf("status %d never injected in 40 draws: %v", s, seen)
		}
	}
}

func TestProperties(t *testing.T) {
	e := newEnv(t, defaultConfig())
	list := func() map[string]map[string]any {
		r := e.must(200, "GET", "/crm/properties/2026-03/contacts", nil)
		out := map[string]map[string]any{}
		for _, x := range r.json()["results"].([]any) {
			m := x.(map[string]any)
			out[m["name"].(string)] = m
		}
		return out
	}
	got := list()
	for _, n := range []string{"email", "firstname", "lastname", "phone", "lifecyclestage", "referral_link", "member_id", "hs_object_id"} {
		if got[n] == nil {
			t.Errorf("property %s missing from the list", n)
		}
	}
	if got["member_id"]["hasUniqueValue"] != true || got["referral_link"]["hasUniqueValue"] != false {
		t.Errorf("hasUniqueValue wrong: %v / %v", got["member_id"], got["referral_link"])
	}
	if md := got["hs_object_id"]["modificationMetadata"].(map[string]any); md["readOnlyValue"] != true {
		t.Errorf("hs_object_id readOnlyValue = %v", md)
	}
	opts := got["lifecyclestage"]["options"].([]any)
	if len(opts) != 8 || opts[1].(map[string]any)["value"] != "lead" || opts[5].(map[string]any)["value"] != "customer" {
		t.Errorf("lifecyclestage options = %v", opts)
	}

	create := map[string]any{"name": "lead_source", "label": "Lead source", "type": "string", "fieldType": "text", "groupName": "contactinformation"}
	r := e.must(201, "POST", "/crm/v3/properties/contacts", create)
	if r.str("name") != "lead_source" {
		t.Errorf("created = %s", r.body)
	}
	if list()["lead_source"] == nil {
		t.Error("created property not listed")
	}
	e.must(201, "POST", contacts, props("email", "a@example.com", "lead_source", "x"))
	if r := e.do("POST", "/crm/v3/properties/contacts", create, tokA); r.status != 409 || r.str("category") != "CONFLICT" {
		t.Errorf("duplicate property = %d %s, want 409 CONFLICT", r.status, r.body)
	}
	r = e.do("POST", "/crm/v3/properties/contacts", map[string]any{"name": "Bad", "type": "text", "groupName": "nope"}, tokA)
	for _, want := range []string{"label is required", "fieldType is required", `name "Bad"`, `type "text"`, `groupName "nope"`} {
		if r.status != 400 || !strings.Contains(r.str("message"), want) {
			t.Errorf("invalid property = %d %s, want 400 mentioning %q", r.status, r.body, want)
		}
	}
}

func TestAdmin(t *testing.T) {
	e := newEnv(t, defaultConfig())
	e.must(201, "POST", contacts, props("email", "a@example.com"))
	get := func(path string, v any) int {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }() // only the status and the JSON matter
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		return resp.StatusCode
	}
	put := func(path, body string) int {
		req, _ := http.NewRequestWithContext(context.Background(), "PUT", e.hs.URL+path, bytes.NewBufferString(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // only the status matters
		return resp.StatusCode
	}
	var cs []map[string]any
	if s := get("/_emulator/contacts?account=101", &cs); s != 200 || len(cs) != 1 {
		t.Errorf("contacts = %d %v", s, cs)
	}
	if s := get("/_emulator/contacts?account=999", &cs); s != 404 {
		t.Errorf("unknown account = %d", s)
	}
	var reqs []emulator.Request
	if s := get("/_emulator/requests?after=0", &reqs); s != 200 || len(reqs) != 1 || reqs[0].Account != 101 || reqs[0].Token == "" || strings.Contains(reqs[0].Token, tokA) {
		t.Errorf("requests = %d %+v", s, reqs)
	}
	if s := put("/_emulator/faults", `{"server_error_rate":0.5,"operations":["create_contact"]}`); s != 200 {
		t.Errorf("put faults = %d", s)
	}
	if f := e.srv.Faults(); f.ServerErrorRate != 0.5 || len(f.Operations) != 1 {
		t.Errorf("faults = %+v", f)
	}
	if s := put("/_emulator/faults", `{"server_error_rate":2}`); s != 400 {
		t.Errorf("invalid faults = %d, want 400", s)
	}
	if s := put("/_emulator/search_lag", `{"search_lag":"45s"}`); s != 200 || e.srv.SearchLag() != 45*time.Second {
		t.Errorf("search lag = %d %v", s, e.srv.SearchLag())
	}
	if s := put("/_emulator/search_lag", `{"search_lag":"-1s"}`); s != 400 {
		t.Errorf("negative search lag = %d, want 400", s)
	}
	// Admin calls are not logged.
	if n := len(e.srv.Requests()); n != 1 {
		t.Errorf("request log has %d entries, want 1", n)
	}
}

func TestLatency(t *testing.T) {
	cfg := defaultConfig()
	cfg.Latency = 5 * time.Second
	e := newEnv(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.hs.URL+"/crm/v3/properties/contacts", nil)
	req.Header.Set("Authorization", "Bearer "+tokA)
	if resp, err := e.hs.Client().Do(req); err == nil {
		_ = resp.Body.Close() // failing anyway
		t.Fatalf("a request under 5 s of latency answered within 50 ms: %d", resp.StatusCode)
	}
	// Admin endpoints are not delayed.
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer acancel()
	areq, _ := http.NewRequestWithContext(actx, "GET", e.hs.URL+"/_emulator/faults", nil)
	resp, err := http.DefaultClient.Do(areq)
	if err != nil {
		t.Fatalf("admin request under latency: %v", err)
	}
	_ = resp.Body.Close() // only the status matters
	if resp.StatusCode != 200 {
		t.Errorf("admin = %d", resp.StatusCode)
	}
}
