package emulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/spec"
)

// anyOp stands for every operation in knownGaps.
const anyOp = "*"

// knownGaps are the statuses the emulator returns although the spec does not
// document them for the operation. Each is a deliberate, sourced choice; the
// contract test still checks that their bodies are valid error envelopes,
// fails on any undocumented status not listed here, and fails if an entry is
// never exercised (so the list cannot go stale).
var knownGaps = []struct {
	op     string
	status int
	why    string
}{
	{emulator.OpCreateContact, 409, "duplicate user: documented only in the unmerged Intercom-OpenAPI PR #543, observed in the wild"},
	{emulator.OpCreateContact, 400, "invalid input (anyOf, email, custom attribute): the docs' HTTP table says 4xx may be returned for any request"},
	{emulator.OpUpdateContact, 400, "invalid input, as for create"},
	{emulator.OpUpdateContact, 404, "unknown contact: \"User Not Found\" is the API's answer, missing from the spec"},
	{emulator.OpUpdateContact, 409, "would duplicate a user's external_id or email, as for create"},
	{emulator.OpShowContact, 404, "unknown contact: \"User Not Found\", missing from the spec"},
	{emulator.OpShowContact, 400, "Intercom-Version 1.x on a 2.x-only route: an emulator limitation (code unsupported)"},
	{emulator.OpShowContactByExternalID, 404, "unknown external_id, a lead, or a version before 2.13"},
	{emulator.OpIdentifyAdmin, 401, "bad token: GET /me documents only 200 although every operation can answer 401"},
	{"DeleteContact", 404, "not modelled by the emulator, which answers 404 as Intercom does for unsupported routes"},
	{anyOp, 406, "Accept does not admit JSON: documented in the docs' HTTP responses table, not per operation"},
	{anyOp, 400, "invalid Intercom-Version (intercom_version_invalid): the header is validated before the operation"},
	{anyOp, 429, "rate limit: documented on the rate-limiting page, not per operation"},
	{anyOp, 500, "injected server error: \"4xx and 5xx may be returned for any request\""},
	{anyOp, 502, "injected server error"},
	{anyOp, 503, "injected server error"},
}

// exchange is one request of the contract battery.
type exchange struct {
	name       string
	method     string
	path       string // may contain {user}, {lead}, {user2}
	body       string
	opts       []opt
	setup      func(e *env)
	wantStatus int
	// badRequest marks requests that break the spec on purpose, to
	// provoke the emulator's validation; the validator must reject them.
	badRequest bool
}

func contractBattery() []exchange {
	noAuth := header("Authorization", "")
	return []exchange{
		{name: "me", method: "GET", path: "/me", wantStatus: 200},
		{name: "me without token", method: "GET", path: "/me", opts: []opt{noAuth}, wantStatus: 401, badRequest: true},
		{name: "me with unknown token", method: "GET", path: "/me", opts: []opt{token(tokUnknown)}, wantStatus: 401},
		{name: "me without Accept", method: "GET", path: "/me", opts: []opt{header("Accept", "")}, wantStatus: 406},
		{name: "create with text Accept", method: "POST", path: "/contacts", body: `{"role":"lead"}`, opts: []opt{header("Accept", "text/html")}, wantStatus: 406},
		{name: "me with bad version", method: "GET", path: "/me", opts: []opt{version("9.9")}, wantStatus: 400, badRequest: true},
		{name: "me in 1.4", method: "GET", path: "/me", opts: []opt{version("1.4")}, wantStatus: 200},

		{name: "create user", method: "POST", path: "/contacts", wantStatus: 200, body: `{"email":"ann@example.com","external_id":"rf:1",
			"role":"user","name":"Ann","phone":"+15550100","avatar":"https://example.com/a.png","owner_id":"12345",
			"signed_up_at":1700000000,"last_seen_at":null,"unsubscribed_from_emails":false,"email_verified":true,
			"custom_attributes":{"rf_source_id":"s1","plan":null}}`},
		{name: "create lead", method: "POST", path: "/contacts", body: `{"role":"lead","email":"ANN@example.com"}`, wantStatus: 200},
		{name: "create second user", method: "POST", path: "/contacts", body: `{"email":"bob@example.com","external_id":"rf:2"}`, wantStatus: 200},
		{name: "create with taken external_id", method: "POST", path: "/contacts", body: `{"external_id":"rf:1"}`, wantStatus: 409},
		{name: "create with taken user email", method: "POST", path: "/contacts", body: `{"email":"Ann@Example.com"}`, wantStatus: 409},
		{name: "create with unknown attribute", method: "POST", path: "/contacts", body: `{"email":"c@example.com","custom_attributes":{"x":1}}`, wantStatus: 400},
		{name: "create with bad email", method: "POST", path: "/contacts", body: `{"email":"nope"}`, wantStatus: 400},
		{name: "create without identifier", method: "POST", path: "/contacts", body: `{"name":"x"}`, wantStatus: 400, badRequest: true},
		{name: "create with numeric role", method: "POST", path: "/contacts", body: `{"role":5}`, wantStatus: 400, badRequest: true},
		{name: "create with integer owner_id", method: "POST", path: "/contacts", body: `{"email":"d@example.com","owner_id":5}`, wantStatus: 400, badRequest: true},
		{name: "create with broken JSON", method: "POST", path: "/contacts", body: `{"email":`, wantStatus: 400, badRequest: true},
		{name: "create without token", method: "POST", path: "/contacts", body: `{"role":"lead"}`, opts: []opt{noAuth}, wantStatus: 401, badRequest: true},

		{name: "show user", method: "GET", path: "/contacts/{user}", wantStatus: 200},
		{name: "show lead", method: "GET", path: "/contacts/{lead}", wantStatus: 200},
		{name: "show with merge history", method: "GET", path: "/contacts/{user}?include_merge_history=true", wantStatus: 200},
		{name: "show unknown", method: "GET", path: "/contacts/0123456789abcdef01234567", wantStatus: 404},
		{name: "show in 1.4", method: "GET", path: "/contacts/{user}", opts: []opt{version("1.4")}, wantStatus: 400},
		{name: "show without token", method: "GET", path: "/contacts/{user}", opts: []opt{noAuth}, wantStatus: 401, badRequest: true},
		{name: "find user", method: "GET", path: "/contacts/find_by_external_id/rf:1", wantStatus: 200},
		{name: "find unknown", method: "GET", path: "/contacts/find_by_external_id/zzz", wantStatus: 404},
		{name: "find in 2.12", method: "GET", path: "/contacts/find_by_external_id/rf:1", opts: []opt{version("2.12")}, wantStatus: 404},

		{name: "update user", method: "PUT", path: "/contacts/{user}", body: `{"name":"Ann B","phone":null,"custom_attributes":{"rf_source_id":"s2"}}`, wantStatus: 200},
		{name: "update lead into user", method: "PUT", path: "/contacts/{lead}", body: `{"role":"user","email":"lead@example.com"}`, wantStatus: 200},
		{name: "update unknown", method: "PUT", path: "/contacts/0123456789abcdef01234567", body: `{"name":"x"}`, wantStatus: 404},
		{name: "update to taken external_id", method: "PUT", path: "/contacts/{user2}", body: `{"external_id":"rf:1"}`, wantStatus: 409},
		{name: "update with bad email", method: "PUT", path: "/contacts/{user}", body: `{"email":"x"}`, wantStatus: 400},
		{name: "update user into lead", method: "PUT", path: "/contacts/{user}", body: `{"role":"lead"}`, wantStatus: 400},
		{name: "update with array body", method: "PUT", path: "/contacts/{user}", body: `[]`, wantStatus: 400, badRequest: true},

		{name: "search single", method: "POST", path: "/contacts/search", wantStatus: 200,
			body: `{"query":{"field":"email","operator":"=","value":"ann@example.com"}}`},
		{name: "search groups of groups", method: "POST", path: "/contacts/search", wantStatus: 200,
			body: `{"query":{"operator":"AND","value":[{"operator":"OR","value":[{"field":"role","operator":"=","value":"user"}]},
			{"operator":"OR","value":[{"field":"email","operator":"=","value":"ann@example.com"},{"field":"external_id","operator":"IN","value":["rf:2"]}]}]}}`},
		// The spec's multiple_filter_search_request takes an array of
		// single filters or an array of groups, never both (oneOf), so a
		// mixed group, which Intercom's docs describe and the emulator
		// serves, breaks the spec.
		{name: "search mixed group", method: "POST", path: "/contacts/search", wantStatus: 200, badRequest: true,
			body: `{"query":{"operator":"AND","value":[{"field":"role","operator":"=","value":"user"},
			{"operator":"OR","value":[{"field":"email","operator":"~","value":"example"},{"field":"custom_attributes.rf_source_id","operator":"=","value":"s2"}]}]}}`},
		{name: "search page 1", method: "POST", path: "/contacts/search", wantStatus: 200,
			body: `{"query":{"field":"role","operator":"=","value":"user"},"pagination":{"per_page":1},"sort":{"field":"created_at","order":"ascending"}}`},
		{name: "search page 2", method: "POST", path: "/contacts/search", wantStatus: 200,
			body: `{"query":{"field":"role","operator":"=","value":"user"},"pagination":{"per_page":1,"starting_after":"{next}"},"sort":{"field":"created_at","order":"ascending"}}`},
		{name: "search by date", method: "POST", path: "/contacts/search", wantStatus: 200,
			body: `{"query":{"field":"created_at","operator":">","value":"1306054154"}}`},
		{name: "search with bad sort order", method: "POST", path: "/contacts/search", wantStatus: 400, badRequest: true,
			body: `{"query":{"field":"role","operator":"=","value":"user"},"sort":{"field":"email","order":"desc"}}`},
		{name: "search unknown field", method: "POST", path: "/contacts/search", wantStatus: 400,
			body: `{"query":{"field":"shoe_size","operator":"=","value":"9"}}`},
		{name: "search per_page 151", method: "POST", path: "/contacts/search", wantStatus: 400,
			body: `{"query":{"field":"role","operator":"=","value":"user"},"pagination":{"per_page":151}}`},
		{name: "search without query", method: "POST", path: "/contacts/search", wantStatus: 400, badRequest: true, body: `{}`},

		{name: "list attributes", method: "GET", path: "/data_attributes", wantStatus: 200},
		{name: "list contact attributes", method: "GET", path: "/data_attributes?model=contact", wantStatus: 200},
		// The spec documents 422 for model=conversation, but its own enum
		// for model does not allow the value.
		{name: "list conversation attributes", method: "GET", path: "/data_attributes?model=conversation", wantStatus: 422, badRequest: true},
		{name: "create attribute", method: "POST", path: "/data_attributes", wantStatus: 200,
			body: `{"name":"Referral Code","model":"contact","data_type":"string","description":"d","messenger_writable":false}`},
		{name: "create list attribute", method: "POST", path: "/data_attributes", wantStatus: 200,
			body: `{"name":"size","model":"contact","data_type":"options","options":[{"value":"S"},{"value":"M"}]}`},
		{name: "create datetime attribute", method: "POST", path: "/data_attributes", wantStatus: 200,
			body: `{"name":"joined","model":"company","data_type":"datetime"}`},
		{name: "create duplicate attribute", method: "POST", path: "/data_attributes", wantStatus: 400,
			body: `{"name":"referral code","model":"contact","data_type":"string"}`},
		{name: "create attribute with one option", method: "POST", path: "/data_attributes", wantStatus: 400,
			body: `{"name":"tiny","model":"contact","data_type":"options","options":[{"value":"S"}]}`},
		{name: "create attribute of unknown type", method: "POST", path: "/data_attributes", wantStatus: 400, badRequest: true,
			body: `{"name":"The Second Ring","model":"company","data_type":"mithril"}`},

		// Requests without an operation are invalid by definition.
		{name: "unknown path", method: "GET", path: "/nope", wantStatus: 404, badRequest: true},
		{name: "unknown method", method: "PATCH", path: "/contacts/{user}", body: `{}`, wantStatus: 404, badRequest: true},
		{name: "delete is not modelled", method: "DELETE", path: "/contacts/{user2}", wantStatus: 404},

		{name: "limited first", method: "GET", path: "/me", opts: []opt{token(tokB)}, wantStatus: 200},
		{name: "limited second", method: "GET", path: "/contacts/{user}", opts: []opt{token(tokB)}, wantStatus: 404},
		{name: "limited third", method: "POST", path: "/contacts", body: `{"role":"lead"}`, opts: []opt{token(tokB)}, wantStatus: 200},
		{name: "limited over", method: "POST", path: "/contacts", body: `{"role":"lead"}`, opts: []opt{token(tokB)}, wantStatus: 429},
	}
}

func TestContract(t *testing.T) {
	v, err := spec.Load()
	if err != nil {
		t.Fatalf("spec.Load() error = %v", err)
	}
	e := newEnv(t, emulator.Config{})
	battery := contractBattery()
	// Injected server errors, spread over the operations.
	fail := func(e *env) {
		if err := e.srv.SetFaults(emulator.Faults{ServerErrorRate: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range []string{"/me", "/contacts/{user}", "/data_attributes", "/contacts/find_by_external_id/rf:1"} {
		for j := range 3 {
			battery = append(battery, exchange{name: fmt.Sprintf("server error %d.%d", i, j), method: "GET", path: p, setup: fail})
		}
	}
	battery = append(battery,
		exchange{name: "server error on create", method: "POST", path: "/contacts", body: `{"role":"lead"}`, setup: fail},
		exchange{name: "server error on search", method: "POST", path: "/contacts/search",
			body: `{"query":{"field":"role","operator":"=","value":"lead"}}`, setup: fail},
	)

	vars := map[string]string{}
	gapSeen := make([]bool, len(knownGaps))
	opsOK := map[string]bool{}
	for _, x := range battery {
		t.Run(x.name, func(t *testing.T) {
			if x.setup != nil {
				x.setup(e)
			}
			path, body := x.path, x.body
			for k, val := range vars {
				path = strings.ReplaceAll(path, "{"+k+"}", val)
				body = strings.ReplaceAll(body, "{"+k+"}", val)
			}
			var sent any
			if body != "" {
				sent = body
			}
			req := e.request(x.method, path, sent, x.opts...)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", x.method, path, err)
			}
			respBody, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close() // read to the end; a close error tells nothing
			if err != nil {
				t.Fatal(err)
			}
			status := resp.StatusCode
			if x.setup != nil {
				if status < 500 {
					t.Fatalf("status = %d with server_error_rate 1, want 5xx", status)
				}
			} else if status != x.wantStatus {
				t.Fatalf("status = %d (%s), want %d", status, respBody, x.wantStatus)
			}
			remember(t, x.name, respBody, vars)

			// The request.
			reqErr := v.ValidateRequest(req, []byte(body))
			if (reqErr != nil) != x.badRequest {
				t.Errorf("ValidateRequest() = %v, want error: %v", reqErr, x.badRequest)
			}

			// The operation names agree.
			rec := lastRequest(t, e)
			specOp, routeErr := v.Operation(x.method, req.URL.Path)
			if rec.Operation != "" && rec.Operation != specOp {
				t.Errorf("emulator operation %q, spec operation %q", rec.Operation, specOp)
			}

			// The response.
			respErr := v.ValidateResponse(req, []byte(body), status, resp.Header, respBody)
			var undoc *spec.UndocumentedStatusError
			switch {
			case respErr == nil:
				if status == 200 {
					opsOK[specOp] = true
				}
			case errors.As(respErr, &undoc):
				if undoc.Envelope != nil {
					t.Errorf("undocumented %d for %s has a bad error envelope: %v", status, undoc.Operation, undoc.Envelope)
				}
				i := gapIndex(undoc.Operation, status)
				if i < 0 {
					t.Errorf("status %d is undocumented for %s and not a known gap: %s", status, undoc.Operation, respBody)
				} else {
					gapSeen[i] = true
				}
			case errors.Is(routeErr, spec.ErrNoRoute) && errors.Is(respErr, spec.ErrNoRoute):
				if status != 404 {
					t.Errorf("no spec operation for %s %s, and status %d, want 404", x.method, path, status)
				}
				if err := v.ValidateError(resp.Header, respBody); err != nil {
					t.Errorf("404 body for an unknown route: %v", err)
				}
			default:
				t.Errorf("ValidateResponse() = %v\nbody: %s", respErr, respBody)
			}
			if x.setup != nil {
				if err := e.srv.SetFaults(emulator.Faults{}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	for i, g := range knownGaps {
		if !gapSeen[i] {
			t.Errorf("known gap %s %d never exercised; remove it or add an exchange", g.op, g.status)
		}
	}
	for _, op := range []string{
		emulator.OpIdentifyAdmin, emulator.OpCreateContact, emulator.OpShowContact, emulator.OpUpdateContact,
		emulator.OpSearchContacts, emulator.OpShowContactByExternalID, emulator.OpListDataAttributes, emulator.OpCreateDataAttribute,
	} {
		if !opsOK[op] {
			t.Errorf("no valid 200 response exercised for %s", op)
		}
	}
}

func gapIndex(op string, status int) int {
	for i, g := range knownGaps {
		if (g.op == op || g.op == anyOp) && g.status == status {
			return i
		}
	}
	return -1
}

// remember keeps ids and cursors that later exchanges refer to.
func remember(t *testing.T, name string, body []byte, vars map[string]string) {
	t.Helper()
	var r struct {
		ID    any `json:"id"`
		Pages struct {
			Next struct {
				StartingAfter string `json:"starting_after"`
			} `json:"next"`
		} `json:"pages"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	id, _ := r.ID.(string)
	switch name {
	case "create user":
		vars["user"] = id
	case "create lead":
		vars["lead"] = id
	case "create second user":
		vars["user2"] = id
	case "search page 1":
		if r.Pages.Next.StartingAfter == "" {
			t.Fatalf("search page 1 has no next cursor: %s", body)
		}
		vars["next"] = r.Pages.Next.StartingAfter
	}
}
