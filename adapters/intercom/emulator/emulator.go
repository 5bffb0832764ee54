// Package emulator is a stateful, in-memory fake of the contacts part of
// Intercom's REST API (API version 2.16 and the older 2.x versions where they
// differ), for tests, demos, benchmarks and fault injection.
//
// The service turns referral events into Intercom contacts exactly once, and
// the parts of Intercom that make that hard are modelled on purpose:
//
//   - POST /contacts is not idempotent. A user whose external_id (or, for
//     users, email) is already taken gets 409 "conflict" with the existing id
//     only inside the message text; leads have no such guard.
//   - POST /contacts/search does not see a new contact for a while
//     (Config.SearchLag), while GET by id and by external_id are immediately
//     consistent.
//   - Rate limits are per token in fixed 10-second windows, announced in
//     X-RateLimit-* headers, and exceeded with 429.
//   - Faults: a 5xx that did not apply the request, a lost response after the
//     change was committed, a stall after the commit, and a burst of 429s.
//
// Request and response bodies follow Intercom's OpenAPI description; the
// package's contract test checks every response the emulator can produce
// against it with package spec. Where Intercom's behaviour is not documented
// the choice made is written next to the code that makes it.
//
// Administrative JSON endpoints under /_emulator/ (a prefix no Intercom path
// can have) expose state and fault settings to tests that run the emulator in
// another process; they need no token. See (*Server).ServeHTTP.
package emulator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Operation names: the OpenAPI operationIds of the operations the emulator
// serves. They name operations in Faults.Operations and Request.Operation,
// and match what package spec reports for the same method and path.
const (
	OpIdentifyAdmin           = "identifyAdmin"
	OpCreateContact           = "CreateContact"
	OpShowContact             = "ShowContact"
	OpUpdateContact           = "UpdateContact"
	OpSearchContacts          = "SearchContacts"
	OpShowContactByExternalID = "ShowContactByExternalId"
	// OpListDataAttributes is spelled as in the spec, typo included.
	OpListDataAttributes  = "lisDataAttributes"
	OpCreateDataAttribute = "createDataAttribute"
)

var operations = []string{
	OpIdentifyAdmin, OpCreateContact, OpShowContact, OpUpdateContact, OpSearchContacts,
	OpShowContactByExternalID, OpListDataAttributes, OpCreateDataAttribute,
}

// Config configures a Server. Only Tokens is required.
type Config struct {
	// Tokens maps each accepted bearer token to its workspace. A token
	// stands for one Intercom app installed in one workspace, with its own
	// contacts, data attributes and rate limit; two tokens may not share a
	// workspace ID. An empty map is an error.
	Tokens map[string]Workspace
	// SearchLag is how long a new contact stays invisible to
	// POST /contacts/search. Intercom documents "a few minutes"; tests
	// usually set a few seconds and move Clock.
	SearchLag time.Duration
	// Latency is added to every API request (not to /_emulator/ ones), to
	// make benchmarks and timeouts realistic.
	Latency time.Duration
	// Faults are the initial fault-injection settings; see SetFaults.
	Faults Faults
	// Seed makes fault injection, contact ids and request ids
	// reproducible: the same seed and the same sequence of requests give
	// the same results.
	Seed int64
	// Clock, if set, replaces time.Now for everything the API reports or
	// decides by time: timestamps, search lag and rate-limit windows.
	// Latency and stalls use real time.
	Clock func() time.Time
}

// Workspace describes the Intercom workspace behind a token.
type Workspace struct {
	// ID is the workspace id (the app's id_code), reported as workspace_id
	// on contacts and as app.id_code by GET /me. Letters, digits, '_' and
	// '-' only.
	ID string
	// RateLimit is the number of requests the token may make per 10-second
	// window. 0 means unlimited; the X-RateLimit headers are still sent,
	// with the limit 2147483647, so clients can rely on them.
	RateLimit int
	// Attributes are the custom contact data attributes that exist from
	// the start (of data type string). Intercom rejects custom_attributes
	// that were not created first.
	Attributes []string
	// Region is reported as app.region by GET /me: "US" (the default),
	// "EU" or "AU".
	Region string
}

// Faults sets the probability of each injected fault. The first three are
// exclusive outcomes of one draw, so their sum may not exceed 1.
type Faults struct {
	// ServerErrorRate is the probability of answering 500, 502 or 503 with
	// an error envelope without applying the request.
	ServerErrorRate float64 `json:"server_error_rate"`
	// LostResponseRate is the probability of applying the request and then
	// closing the connection without a response: the client cannot tell
	// whether the write happened.
	LostResponseRate float64 `json:"lost_response_rate"`
	// TimeoutRate is the probability of applying the request and then
	// stalling until the client gives up (or 30 s pass, or Close is
	// called), after which the connection is closed without a response.
	TimeoutRate float64 `json:"timeout_rate"`
	// RateLimitBurstRate is the probability, per request, of exhausting
	// the token's current rate-limit window at once, so that this and all
	// further requests get 429 until the window resets.
	RateLimitBurstRate float64 `json:"rate_limit_burst_rate"`
	// Operations restricts faults to these operations (the Op constants);
	// empty means every operation. Unknown paths never get faults.
	Operations []string `json:"operations,omitempty"`
}

// Fault names a fault injected into one request.
type Fault string

// The faults recorded in Request.Fault.
const (
	FaultNone        Fault = "none"
	FaultServerError Fault = "5xx"
	FaultLost        Fault = "lost"
	FaultTimeout     Fault = "timeout"
	FaultRateLimit   Fault = "429" // rejected because of an injected burst
)

// Request is one entry of the request log, for assertions about what a
// client did. It never holds a token, only a short hash of it.
type Request struct {
	// Seq numbers requests from 1 in arrival order; /_emulator/requests
	// accepts ?after=Seq to fetch only newer entries.
	Seq int64 `json:"seq"`
	// Time is when the emulator began the request (after Latency), by
	// Config.Clock.
	Time time.Time `json:"time"`
	// Token is the first 8 hex digits of the SHA-256 of the bearer token,
	// empty when there was none; it tells apart unknown tokens.
	Token string `json:"token,omitempty"`
	// Workspace is the token's workspace ID, empty for a rejected token.
	Workspace string `json:"workspace,omitempty"`
	// Method and Path are the request's; Path has no query.
	Method string `json:"method"`
	Path   string `json:"path"`
	// Operation is the OpenAPI operationId, empty for unknown paths.
	Operation string `json:"operation,omitempty"`
	// Version is the effective Intercom-Version, or the header as sent
	// when it is not a valid version.
	Version string `json:"version,omitempty"`
	// Status is the status the emulator produced. With FaultLost and
	// FaultTimeout it was never delivered.
	Status int   `json:"status"`
	Fault  Fault `json:"fault"`
	// ContactID is the contact created, updated, or found by a conflict.
	ContactID string `json:"contact_id,omitempty"`
	// Committed reports whether the request changed state.
	Committed bool `json:"committed"`
	// RequestID is the request_id of the response (also sent as the
	// X-Request-Id header), to match client logs with the emulator's.
	RequestID string `json:"request_id,omitempty"`
}

const (
	window      = 10 * time.Second
	unlimited   = 1<<31 - 1
	stallCap    = 30 * time.Second
	maxLog      = 100_000 // entries kept; older ones are dropped
	maxBodySize = 1 << 20
)

// Server is the emulator, an http.Handler. It is safe for concurrent use.
type Server struct {
	now    func() time.Time
	lat    time.Duration
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	faults   Faults
	lag      time.Duration
	tokens   map[string]*workspace
	byID     map[string]*workspace
	faultRNG *rand.Rand
	idRNG    *rand.Rand
	idTail   [5]byte // middle bytes of every contact id, fixed per server
	idCount  uint32
	attrSeq  int
	log      []Request
	seq      int64
	started  time.Time
}

// New checks cfg and returns a Server. Every problem in cfg is reported,
// joined in one error.
func New(cfg Config) (*Server, error) {
	var errs []error
	if len(cfg.Tokens) == 0 {
		errs = append(errs, errors.New("emulator: no tokens configured"))
	}
	if cfg.SearchLag < 0 {
		errs = append(errs, fmt.Errorf("emulator: negative search lag %v", cfg.SearchLag))
	}
	if cfg.Latency < 0 {
		errs = append(errs, fmt.Errorf("emulator: negative latency %v", cfg.Latency))
	}
	errs = append(errs, cfg.Faults.check()...)
	seen := map[string]bool{}
	// Sorted so that errors come out in a stable order.
	tokens := make([]string, 0, len(cfg.Tokens))
	for tok := range cfg.Tokens {
		tokens = append(tokens, tok)
	}
	slices.Sort(tokens)
	for _, tok := range tokens {
		ws := cfg.Tokens[tok]
		name := "token " + tokenHash(tok)
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
			errs = append(errs, fmt.Errorf("emulator: %s: token is empty or contains white space", name))
		}
		if !validWorkspaceID(ws.ID) {
			errs = append(errs, fmt.Errorf("emulator: %s: invalid workspace id %q", name, ws.ID))
		} else if seen[ws.ID] {
			errs = append(errs, fmt.Errorf("emulator: %s: workspace id %q used by another token", name, ws.ID))
		}
		seen[ws.ID] = true
		if ws.RateLimit < 0 {
			errs = append(errs, fmt.Errorf("emulator: %s: negative rate limit %d", name, ws.RateLimit))
		}
		switch ws.Region {
		case "", "US", "EU", "AU":
		default:
			errs = append(errs, fmt.Errorf("emulator: %s: region %q is not US, EU or AU", name, ws.Region))
		}
		names := map[string]bool{}
		for _, a := range ws.Attributes {
			if msg := checkAttributeName(a); msg != "" {
				errs = append(errs, fmt.Errorf("emulator: %s: attribute %q: %s", name, a, msg))
			} else if names[strings.ToLower(a)] {
				errs = append(errs, fmt.Errorf("emulator: %s: attribute %q listed twice", name, a))
			}
			names[strings.ToLower(a)] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	now := cfg.Clock
	if now == nil {
		now = time.Now
	}
	seed := uint64(cfg.Seed) //nolint:gosec // G115: the seed's bits, sign included, not a quantity
	s := &Server{
		now:      now,
		lat:      cfg.Latency,
		closed:   make(chan struct{}),
		faults:   cfg.Faults.clone(),
		lag:      cfg.SearchLag,
		tokens:   map[string]*workspace{},
		byID:     map[string]*workspace{},
		faultRNG: rand.New(rand.NewPCG(seed, 0x6661756c74)), //nolint:gosec // G404: seeded so that a run's faults repeat
		idRNG:    rand.New(rand.NewPCG(seed, 0x6964)),       //nolint:gosec // G404: seeded so that a run's ids repeat; ids are not secrets
		started:  now(),
	}
	for i := range s.idTail {
		s.idTail[i] = byte(s.idRNG.Uint32()) //nolint:gosec // G115: keeping the low byte is the point
	}
	for _, tok := range tokens {
		ws := newWorkspace(cfg.Tokens[tok], s.started)
		for _, a := range cfg.Tokens[tok].Attributes {
			s.attrSeq++
			ws.addAttribute(&attribute{
				id: s.attrSeq, model: "contact", name: a, dataType: "string",
				custom: true, apiWritable: true, created: s.started,
			})
		}
		s.tokens[tok] = ws
		s.byID[ws.cfg.ID] = ws
	}
	return s, nil
}

func validWorkspaceID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !idRune(r) {
			return false
		}
	}
	return true
}

// idRune reports whether r may appear in a workspace id.
func idRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// tokenHash is how tokens appear in logs and errors: never in full.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:4])
}

func (f Faults) check() []error {
	var errs []error
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"server error rate", f.ServerErrorRate},
		{"lost response rate", f.LostResponseRate},
		{"timeout rate", f.TimeoutRate},
		{"rate limit burst rate", f.RateLimitBurstRate},
	} {
		if !(r.v >= 0 && r.v <= 1) {
			errs = append(errs, fmt.Errorf("emulator: %s %v is not in [0, 1]", r.name, r.v))
		}
	}
	if sum := f.ServerErrorRate + f.LostResponseRate + f.TimeoutRate; sum > 1 {
		errs = append(errs, fmt.Errorf("emulator: server error, lost response and timeout rates add up to %v, more than 1", sum))
	}
	for _, op := range f.Operations {
		if !slices.Contains(operations, op) {
			errs = append(errs, fmt.Errorf("emulator: fault operation %q is not one of %s", op, strings.Join(operations, ", ")))
		}
	}
	return errs
}

func (f Faults) clone() Faults {
	f.Operations = slices.Clone(f.Operations)
	return f
}

// SetFaults replaces the fault settings for requests that arrive from now on.
func (s *Server) SetFaults(f Faults) error {
	if err := errors.Join(f.check()...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f.clone()
	return nil
}

// Faults returns the current fault settings.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.clone()
}

// SetSearchLag changes Config.SearchLag. It applies to existing contacts too,
// since visibility is decided at search time from each contact's creation
// time.
func (s *Server) SetSearchLag(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("emulator: negative search lag %v", d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = d
	return nil
}

// SearchLag returns the current search lag.
func (s *Server) SearchLag() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lag
}

// Contacts returns a snapshot of the contacts of token's workspace, in
// creation order, or nil for an unknown token.
func (s *Server) Contacts(token string) []Contact {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.tokens[token]
	if ws == nil {
		return nil
	}
	return ws.snapshot()
}

// Delete removes a contact, as a deletion or a merge in Intercom would:
// later reads, searches and updates no longer find it. It reports whether
// the contact existed.
func (s *Server) Delete(token, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.tokens[token]
	if ws == nil {
		return false
	}
	c := ws.byID[id]
	if c == nil {
		return false
	}
	ws.unindex(c)
	delete(ws.byID, id)
	ws.contacts = slices.DeleteFunc(ws.contacts, func(x *Contact) bool { return x == c })
	return true
}

// Requests returns a copy of the request log, oldest first. Only the latest
// 100,000 requests are kept.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// Close ends stalled responses (see Faults.TimeoutRate) at once and makes
// later stalls end immediately. Call it before shutting down the http.Server
// that serves s; Shutdown would otherwise wait for the stalls. The Server
// keeps answering other requests.
func (s *Server) Close() {
	s.once.Do(func() { close(s.closed) })
}

func (s *Server) record(rec Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	rec.Seq = s.seq
	if len(s.log) >= maxLog {
		s.log = slices.Delete(s.log, 0, len(s.log)-maxLog+1)
	}
	s.log = append(s.log, rec)
}

// ServeHTTP serves the Intercom API and, under /_emulator/, the admin
// endpoints:
//
//	GET /_emulator/contacts?workspace=ID  contacts as the API renders them (2.16)
//	GET /_emulator/requests[?after=SEQ]   the request log
//	GET, PUT /_emulator/faults            Faults as JSON
//	GET, PUT /_emulator/search_lag        {"search_lag": "1m30s"}
//
// An API request goes through these steps, each of which may answer it:
// latency; token (401); rate limit (429, possibly an injected burst); the
// fault draw (5xx); Accept (406); Intercom-Version (400); route (404); body
// (400); the operation; and finally delivery, which a lost-response or
// timeout fault replaces by closing the connection.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, adminPrefix) {
		s.admin(w, r)
		return
	}
	if s.lat > 0 {
		t := time.NewTimer(s.lat)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	rec := Request{Time: s.now(), Method: r.Method, Path: r.URL.Path, Fault: FaultNone}
	resp := s.serve(r, &rec)
	rec.Status = resp.status
	rec.RequestID = resp.requestID
	switch rec.Fault {
	case FaultLost:
		s.record(rec)
		abort(w)
	case FaultTimeout:
		s.record(rec)
		s.stall(r.Context())
		abort(w)
	default:
		s.record(rec)
		resp.write(w)
	}
}

// stall waits for the client to give up, for the cap, or for Close.
func (s *Server) stall(ctx context.Context) {
	t := time.NewTimer(stallCap)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-s.closed:
	}
}

// abort closes the connection without a response. Hijacking works for
// HTTP/1.x; elsewhere http.ErrAbortHandler makes the server reset the stream.
func abort(w http.ResponseWriter) {
	if h, ok := w.(http.Hijacker); ok {
		if conn, _, err := h.Hijack(); err == nil {
			_ = conn.Close() // dropping the connection is the fault; how it closes is not
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// serve runs the request pipeline up to, but not including, delivery.
func (s *Server) serve(r *http.Request, rec *Request) *response {
	tok, hasTok := bearer(r.Header.Get("Authorization"))
	if hasTok {
		rec.Token = tokenHash(tok)
	}
	op, params := route(r.Method, r.URL)
	rec.Operation = op
	ver, verOK := version(r.Header.Get("Intercom-Version"))
	rec.Version = ver.String()
	if !verOK {
		rec.Version = r.Header.Get("Intercom-Version")
	}

	s.mu.Lock()
	ws := s.tokens[tok]
	if !hasTok || ws == nil {
		resp := s.fail(http.StatusUnauthorized, "unauthorized", "Access Token Invalid")
		s.mu.Unlock()
		return resp
	}
	rec.Workspace = ws.cfg.ID
	eligible := op != "" && (len(s.faults.Operations) == 0 || slices.Contains(s.faults.Operations, op))
	now := s.now()
	limit, remaining, reset, burst, ok := ws.take(now, eligible && s.roll(s.faults.RateLimitBurstRate))
	var fault Fault
	if ok && eligible {
		// One draw decides among the exclusive outcomes, so that the rates
		// keep their meaning when combined.
		u := s.faultRNG.Float64()
		switch f := s.faults; {
		case u < f.ServerErrorRate:
			fault = FaultServerError
		case u < f.ServerErrorRate+f.LostResponseRate:
			fault = FaultLost
		case u < f.ServerErrorRate+f.LostResponseRate+f.TimeoutRate:
			fault = FaultTimeout
		}
	}
	var resp *response
	switch {
	case !ok:
		resp = s.fail(http.StatusTooManyRequests, "rate_limit_exceeded",
			fmt.Sprintf("Exceeded rate limit of %d in 10_seconds", limit))
		if burst {
			rec.Fault = FaultRateLimit
		}
	case fault == FaultServerError:
		resp = s.serverError()
		rec.Fault = FaultServerError
	default:
		s.mu.Unlock()
		resp = s.apply(r, rec, ws, op, params, ver, verOK)
		s.mu.Lock()
		if fault != "" {
			rec.Fault = fault
		}
	}
	s.mu.Unlock()
	resp.header.Set("X-RateLimit-Limit", fmt.Sprint(limit))
	resp.header.Set("X-RateLimit-Remaining", fmt.Sprint(remaining))
	resp.header.Set("X-RateLimit-Reset", fmt.Sprint(reset))
	return resp
}

// roll draws a fault with probability p. The caller holds s.mu.
func (s *Server) roll(p float64) bool {
	return p > 0 && s.faultRNG.Float64() < p
}

// serverError picks one of the 5xx answers Intercom's load balancers and
// servers give. The caller holds s.mu.
func (s *Server) serverError() *response {
	switch s.faultRNG.IntN(3) {
	case 0:
		return s.fail(http.StatusInternalServerError, "server_error", "Server Error")
	case 1:
		return s.fail(http.StatusBadGateway, "server_error", "Bad Gateway")
	default:
		return s.fail(http.StatusServiceUnavailable, "service_unavailable", "Service Unavailable")
	}
}

// apply checks the request's headers and body and runs the operation. It
// takes s.mu itself, after reading the body.
func (s *Server) apply(r *http.Request, rec *Request, ws *workspace, op string, params []string, ver apiVersion, verOK bool) *response {
	if !acceptsJSON(r.Header.Values("Accept")) {
		return s.locked(func() *response {
			return s.fail(http.StatusNotAcceptable, "not_acceptable", "The Accept header should send a media type of application/json")
		})
	}
	if !verOK {
		return s.locked(func() *response {
			return s.fail(http.StatusBadRequest, "intercom_version_invalid",
				fmt.Sprintf("Intercom-Version %q is not a valid version", r.Header.Get("Intercom-Version")))
		})
	}
	if op == "" {
		return s.locked(func() *response { return s.fail(http.StatusNotFound, "not_found", "Resource Not Found") })
	}
	if op != OpIdentifyAdmin && ver.major < 2 {
		// 1.x had separate users and leads APIs, which are not modelled.
		return s.locked(func() *response {
			return s.fail(http.StatusBadRequest, "unsupported",
				fmt.Sprintf("Intercom-Version %s is not supported by the emulator for %s; use 2.0 or later", ver, op))
		})
	}
	var body fields
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		var msg string
		body, msg = readBody(r)
		if msg != "" {
			return s.locked(func() *response { return s.fail(http.StatusBadRequest, "parameter_invalid", msg) })
		}
	}
	c := &call{s: s, ws: ws, ver: ver, query: r.URL.Query(), body: body, rec: rec}
	return s.locked(func() *response {
		switch op {
		case OpIdentifyAdmin:
			return c.me()
		case OpCreateContact:
			return c.createContact()
		case OpShowContact:
			return c.showContact(params[0])
		case OpUpdateContact:
			return c.updateContact(params[0])
		case OpShowContactByExternalID:
			return c.findByExternalID(params[0])
		case OpSearchContacts:
			return c.search()
		case OpListDataAttributes:
			return c.listAttributes()
		case OpCreateDataAttribute:
			return c.createAttribute()
		}
		panic("emulator: unrouted operation " + op)
	})
}

func (s *Server) locked(f func() *response) *response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

// call carries what an operation needs. Its methods run with s.mu held.
type call struct {
	s     *Server
	ws    *workspace
	ver   apiVersion
	query url.Values
	body  fields
	rec   *Request
}

// route maps a method and path to an operation and its path parameters.
// Unsupported methods on known paths are unknown routes too: Intercom
// answers 404 to them, not 405.
func route(method string, u *url.URL) (string, []string) {
	raw := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
	seg := make([]string, len(raw))
	for i, p := range raw {
		var err error
		if seg[i], err = url.PathUnescape(p); err != nil {
			return "", nil
		}
	}
	switch {
	case len(seg) == 1 && seg[0] == "me" && method == http.MethodGet:
		return OpIdentifyAdmin, nil
	case len(seg) == 1 && seg[0] == "contacts" && method == http.MethodPost:
		return OpCreateContact, nil
	case len(seg) == 2 && seg[0] == "contacts" && seg[1] == "search":
		if method == http.MethodPost {
			return OpSearchContacts, nil
		}
		return "", nil
	case len(seg) == 2 && seg[0] == "contacts" && seg[1] != "":
		switch method {
		case http.MethodGet:
			return OpShowContact, seg[1:]
		case http.MethodPut:
			return OpUpdateContact, seg[1:]
		}
	case len(seg) == 3 && seg[0] == "contacts" && seg[1] == "find_by_external_id" && seg[2] != "" && method == http.MethodGet:
		return OpShowContactByExternalID, seg[2:]
	case len(seg) == 1 && seg[0] == "data_attributes":
		switch method {
		case http.MethodGet:
			return OpListDataAttributes, nil
		case http.MethodPost:
			return OpCreateDataAttribute, nil
		}
	}
	return "", nil
}
