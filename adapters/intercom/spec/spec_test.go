package spec

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
)

// validator loads the shared Validator or stops the test.
func validator(t *testing.T) *Validator {
	t.Helper()
	v, err := Load()
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	return v
}

// request builds an authenticated JSON request to the production host, as
// the adapter would send it.
func request(t *testing.T, method, path, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, "https://api.intercom.io"+path, rd)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	r.Header.Set("Authorization", "Bearer tok")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("Intercom-Version", "2.16")
	if method == http.MethodPost || method == http.MethodPut {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json; charset=utf-8"}}
}

const goodContact = `{"type":"contact","id":"6762f0dd1bb69f9f2193bb83","workspace_id":"ws1","external_id":"e1",
"role":"user","email":"a@b.co","email_domain":"b.co","phone":null,"name":null,"avatar":null,"owner_id":null,
"social_profiles":{"type":"list","data":[]},"has_hard_bounced":false,"marked_email_as_spam":false,
"unsubscribed_from_emails":false,"created_at":1734537437,"updated_at":1734537437,"signed_up_at":1734537437,
"last_seen_at":null,"location":{"type":"location","country":null,"region":null,"city":null},
"custom_attributes":{},"tags":{"type":"list","data":[],"url":"/contacts/6762f0dd1bb69f9f2193bb83/tags","total_count":0,"has_more":false},
"notes":{"type":"list","data":[],"url":"/contacts/6762f0dd1bb69f9f2193bb83/notes","total_count":0,"has_more":false},
"companies":{"type":"list","data":[],"url":"/contacts/6762f0dd1bb69f9f2193bb83/companies","total_count":0,"has_more":false}}`

func TestLoadIsCachedAndFast(t *testing.T) {
	start := time.Now()
	v1 := validator(t)
	first := time.Since(start)
	start = time.Now()
	v2 := validator(t)
	if again := time.Since(start); again > 50*time.Millisecond {
		t.Errorf("second Load() took %v, want a cached answer", again)
	}
	if v1 != v2 {
		t.Errorf("Load() returned %p then %p, want the same Validator", v1, v2)
	}
	t.Logf("first Load() took %v", first)
}

func TestValidateRequest(t *testing.T) {
	v := validator(t)
	tests := []struct {
		name    string
		req     func(t *testing.T) *http.Request
		body    string
		wantErr bool
	}{
		{"create with email", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts", "") }, `{"email":"a@b.co","role":"user"}`, false},
		{"create role not a string", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts", "") }, `{"role":5}`, true},
		{"create without any identifier", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts", "") }, `{"name":"x"}`, true},
		{"create owner_id integer in 2.16", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts", "") }, `{"email":"a@b.co","owner_id":5}`, true},
		{"search single filter", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts/search", "") }, `{"query":{"field":"email","operator":"=","value":"a@b.co"}}`, false},
		{"search without query", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts/search", "") }, `{"pagination":{"per_page":5}}`, true},
		{"search bad operator", func(t *testing.T) *http.Request { return request(t, "POST", "/contacts/search", "") }, `{"query":{"field":"email","operator":"==","value":"a"}}`, true},
		{"get contact", func(t *testing.T) *http.Request { return request(t, "GET", "/contacts/abc", "") }, "", false},
		{"no bearer token", func(t *testing.T) *http.Request {
			r := request(t, "GET", "/contacts/abc", "")
			r.Header.Del("Authorization")
			return r
		}, "", true},
		{"basic auth instead of bearer", func(t *testing.T) *http.Request {
			r := request(t, "GET", "/me", "")
			r.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
			return r
		}, "", true},
		{"empty bearer token", func(t *testing.T) *http.Request {
			r := request(t, "GET", "/me", "")
			r.Header.Set("Authorization", "Bearer ")
			return r
		}, "", true},
		{"unknown version", func(t *testing.T) *http.Request {
			r := request(t, "GET", "/me", "")
			r.Header.Set("Intercom-Version", "9.9")
			return r
		}, "", true},
		{"data attributes bad model", func(t *testing.T) *http.Request { return request(t, "GET", "/data_attributes?model=ticket", "") }, "", true},
		{"body on a GET", func(t *testing.T) *http.Request { return request(t, "GET", "/me", "") }, `{"x":1}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.ValidateRequest(tt.req(t), []byte(tt.body))
			if got := err != nil; got != tt.wantErr {
				t.Errorf("ValidateRequest() error = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}

func TestValidateResponse(t *testing.T) {
	v := validator(t)
	errBody := `{"type":"error.list","request_id":"89ce96d9-aae9-4eec-ace2-d68cc4f74879","errors":[{"code":"conflict","message":"A contact matching those details already exists with id=6762f0dd1bb69f9f2193bb83"}]}`
	tests := []struct {
		name       string
		method     string
		path       string
		status     int
		header     http.Header
		body       string
		wantErr    bool
		wantUndoc  bool // an *UndocumentedStatusError
		wantEnvErr bool // ... whose Envelope is not nil
		wantNoOp   bool // ErrNoRoute
	}{
		{name: "good contact", method: "POST", path: "/contacts", status: 200, header: jsonHeader(), body: goodContact},
		{name: "contact with numeric created_at string", method: "POST", path: "/contacts", status: 200, header: jsonHeader(),
			body: strings.Replace(goodContact, `"created_at":1734537437`, `"created_at":"1734537437"`, 1), wantErr: true},
		{name: "contact with role number", method: "GET", path: "/contacts/x", status: 200, header: jsonHeader(),
			body: strings.Replace(goodContact, `"role":"user"`, `"role":1`, 1), wantErr: true},
		{name: "not json content type", method: "GET", path: "/contacts/x", status: 200, header: http.Header{"Content-Type": {"text/plain"}}, body: goodContact, wantErr: true},
		{name: "documented 401", method: "GET", path: "/contacts/x", status: 401, header: jsonHeader(),
			body: `{"type":"error.list","request_id":"45b30bd1-75d2-40cc-bb39-74ac133a2836","errors":[{"code":"unauthorized","message":"Access Token Invalid"}]}`},
		{name: "documented 401 with bad request_id", method: "GET", path: "/contacts/x", status: 401, header: jsonHeader(),
			body: `{"type":"error.list","request_id":"nope","errors":[{"code":"unauthorized","message":"Access Token Invalid"}]}`, wantErr: true},
		{name: "documented 401 without code", method: "GET", path: "/contacts/x", status: 401, header: jsonHeader(),
			body: `{"type":"error.list","errors":[{"message":"Access Token Invalid"}]}`, wantErr: true},
		{name: "undocumented 409 with envelope", method: "POST", path: "/contacts", status: 409, header: jsonHeader(), body: errBody,
			wantErr: true, wantUndoc: true},
		{name: "undocumented 409 without errors", method: "POST", path: "/contacts", status: 409, header: jsonHeader(), body: `{"type":"error.list"}`,
			wantErr: true, wantUndoc: true, wantEnvErr: true},
		{name: "undocumented 503 html", method: "GET", path: "/me", status: 503, header: http.Header{"Content-Type": {"text/html"}}, body: `<html>`,
			wantErr: true, wantUndoc: true, wantEnvErr: true},
		{name: "unknown path 404", method: "GET", path: "/nope", status: 404, header: jsonHeader(),
			body: `{"type":"error.list","errors":[{"code":"not_found","message":"Resource Not Found"}]}`, wantErr: true, wantNoOp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request(t, tt.method, tt.path, "")
			err := v.ValidateResponse(r, nil, tt.status, tt.header, []byte(tt.body))
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("ValidateResponse() error = %v, want error: %v", err, tt.wantErr)
			}
			var u *UndocumentedStatusError
			if got := errors.As(err, &u); got != tt.wantUndoc {
				t.Fatalf("errors.As(UndocumentedStatusError) = %v (err %v), want %v", got, err, tt.wantUndoc)
			}
			if got := errors.Is(err, ErrUndocumentedStatus); got != tt.wantUndoc {
				t.Errorf("errors.Is(ErrUndocumentedStatus) = %v, want %v", got, tt.wantUndoc)
			}
			if u != nil {
				if got := u.Envelope != nil; got != tt.wantEnvErr {
					t.Errorf("Envelope = %v, want error: %v", u.Envelope, tt.wantEnvErr)
				}
				if u.Status != tt.status {
					t.Errorf("Status = %d, want %d", u.Status, tt.status)
				}
			}
			if got := errors.Is(err, ErrNoRoute); got != tt.wantNoOp {
				t.Errorf("errors.Is(ErrNoRoute) = %v, want %v", got, tt.wantNoOp)
			}
		})
	}
}

func TestOperation(t *testing.T) {
	v := validator(t)
	tests := []struct {
		method, path, want string
		wantErr            bool
	}{
		{"POST", "/contacts", "CreateContact", false},
		{"POST", "/contacts/search", "SearchContacts", false},
		{"GET", "/contacts/5f00", "ShowContact", false},
		{"PUT", "/contacts/5f00", "UpdateContact", false},
		{"GET", "/contacts/find_by_external_id/e-1", "ShowContactByExternalId", false},
		{"GET", "/me", "identifyAdmin", false},
		{"GET", "/data_attributes", "lisDataAttributes", false},
		{"POST", "/data_attributes", "createDataAttribute", false},
		{"PATCH", "/contacts/5f00", "", true},
		{"GET", "/nope", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			got, err := v.Operation(tt.method, tt.path)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("Operation() = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, ErrNoRoute) {
				t.Errorf("Operation() error = %v, want ErrNoRoute", err)
			}
		})
	}
}

func TestTransport(t *testing.T) {
	v := validator(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/contacts/good":
			_, _ = io.WriteString(w, goodContact)
		case "/contacts/bad":
			_, _ = io.WriteString(w, `{"type":"contact","created_at":"yesterday"}`)
		default:
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"type":"error.list","errors":[{"code":"conflict","message":"x"}]}`)
		}
	}))
	defer srv.Close()

	var mu sync.Mutex
	var reports []error
	c := &http.Client{Transport: v.Transport(nil, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, err)
	})}
	do := func(method, path, body string, auth bool) string {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		r, err := http.NewRequestWithContext(context.Background(), method, srv.URL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if auth {
			r.Header.Set("Authorization", "Bearer t")
		}
		r.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(r)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer func() { _ = resp.Body.Close() }() // read to the end below
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	take := func() []error {
		mu.Lock()
		defer mu.Unlock()
		r := reports
		reports = nil
		return r
	}

	if got := do("GET", "/contacts/good", "", true); got != goodContact {
		t.Errorf("body through transport = %q, want it unchanged", got)
	}
	if got := take(); len(got) != 0 {
		t.Errorf("reports for a good exchange = %v, want none", got)
	}

	do("GET", "/contacts/bad", "", true)
	if got := take(); len(got) != 1 || errors.Is(got[0], ErrUndocumentedStatus) {
		t.Errorf("reports for a bad response body = %v, want one body error", got)
	}

	do("POST", "/contacts", `{"role":5}`, false)
	got := take()
	if len(got) != 2 {
		t.Fatalf("reports for bad request and 409 = %v, want 2", got)
	}
	if errors.Is(got[0], ErrUndocumentedStatus) || !errors.Is(got[1], ErrUndocumentedStatus) {
		t.Errorf("reports = %v, want a request error then an undocumented status", got)
	}
}

// TestDocumentDefects pins what is wrong with the embedded file, so that a
// refreshed copy with new defects (possibly in the contacts surface, where
// they would weaken the checks) is noticed. See the package comment.
func TestDocumentDefects(t *testing.T) {
	v := validator(t)
	err := v.doc.Validate(context.Background(), openapi3.DisableExamplesValidation(), openapi3.EnableMultiError())
	var me openapi3.MultiError
	if !errors.As(err, &me) {
		t.Fatalf("Validate() = %v, want the known multi-error", err)
	}
	if len(me) != 17 {
		t.Errorf("Validate() found %d defects, want the 17 known ones", len(me))
	}
	for _, e := range me {
		msg := e.Error()
		for _, s := range []string{"contact", "data_attribute", `schema "error"`, "/me:", "admin", "pages", "search_request"} {
			if strings.Contains(msg, s) {
				t.Errorf("defect touches the contacts surface (%q): %.300s", s, msg)
			}
		}
	}
}
