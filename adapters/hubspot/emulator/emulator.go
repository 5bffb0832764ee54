// Package emulator is a stateful, in-memory fake of the parts of HubSpot's
// CRM API that the HubSpot adapter uses: contacts (create, read by id or by a
// unique property, update, search) and contact properties (list, create),
// for tests, demos, benchmarks and fault injection.
//
// It is built from HubSpot's documented behaviour, summarised with sources
// in the project's research note on the HubSpot API, not from HubSpot's
// OpenAPI files, which are not licensed for reuse. Where HubSpot's
// behaviour is not documented, the choice made is written next to the code
// that makes it and marked "undocumented".
//
// The parts of HubSpot that matter for exactly-once delivery are modelled on
// purpose:
//
//   - Email is a contact's unique key: a create whose email is taken gets
//     409 with category CONFLICT and the existing id only inside the message,
//     "Contact already exists. Existing ID: N". Custom properties created
//     with hasUniqueValue are unique too.
//   - Reads by id or by a unique property (GET …/contacts/{email}?idProperty=email)
//     are immediately consistent; search (POST …/contacts/search) does not see a
//     new contact for a while (Config.SearchLag).
//   - Writes of a property that does not exist, is read-only, or (for an
//     enumeration such as lifecyclestage) of a value that is not an option,
//     are refused with 400 VALIDATION_ERROR.
//   - Rate limits: a per-token budget per interval (ten seconds by
//     default), announced in X-HubSpot-RateLimit-* headers; an optional
//     daily budget; and a separate per-second search limit, whose responses
//     carry no rate-limit headers.
//   - Faults: a 5xx that did not apply the request, a lost response after the
//     change was committed, a stall after the commit, and a burst of 429s.
//
// Both path families are served: the numbered /crm/v3/objects/contacts and
// /crm/v3/properties/contacts, and the date-versioned
// /crm/objects/YYYY-MM/contacts and /crm/properties/YYYY-MM/contacts.
//
// Administrative JSON endpoints under /_emulator/ (a prefix no HubSpot path
// has) expose state and fault settings to tests that run the emulator in
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
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Operation names. They name operations in Faults.Operations and
// Request.Operation.
const (
	OpCreateContact  = "create_contact"
	OpGetContact     = "get_contact"
	OpUpdateContact  = "update_contact"
	OpSearchContacts = "search_contacts"
	OpListProperties = "list_properties"
	OpCreateProperty = "create_property"
)

var operations = []string{OpCreateContact, OpGetContact, OpUpdateContact, OpSearchContacts, OpListProperties, OpCreateProperty}

// Config configures a Server. Only Tokens is required.
type Config struct {
	// Tokens maps each accepted bearer token (a private-app or service-key
	// token) to its account. Two tokens may not share an account ID. An
	// empty map is an error.
	Tokens map[string]Account
	// SearchLag is how long a new contact stays invisible to search.
	// HubSpot documents no figure; reports range from seconds to about 30
	// seconds. Reads by id or email are never delayed.
	SearchLag time.Duration
	// Latency is added to every API request (not to /_emulator/ ones).
	Latency time.Duration
	// Faults are the initial fault-injection settings; see SetFaults.
	Faults Faults
	// Seed makes fault injection, contact ids and correlation ids
	// reproducible.
	Seed int64
	// Clock, if set, replaces time.Now for everything the API reports or
	// decides by time: timestamps, search lag and rate-limit windows.
	// Latency and stalls use real time.
	Clock func() time.Time
}

// Account describes the HubSpot account (portal) behind a token.
type Account struct {
	// ID is the account's portal id, a positive number.
	ID int64
	// RateLimit is the number of requests the token may make per
	// Interval, search excluded (HubSpot: 100 to 250 per ten seconds by
	// tier). 0 means unlimited; the headers then announce 2147483647.
	RateLimit int
	// Interval is the rate-limit window; 0 selects ten seconds.
	Interval time.Duration
	// DailyLimit is the number of requests per day (UTC; HubSpot resets
	// at midnight in the account's time zone). 0 means unlimited, and the
	// X-HubSpot-RateLimit-Daily headers are then left out, as for OAuth
	// calls.
	DailyLimit int
	// SearchRateLimit is the number of search requests per second
	// (HubSpot: 4 per token). 0 means unlimited.
	SearchRateLimit int
	// Properties are custom contact properties (type string) that exist
	// from the start, beside HubSpot's default ones.
	Properties []string
	// UniqueProperties are custom string properties with hasUniqueValue,
	// usable as idProperty.
	UniqueProperties []string
	// ReadOnly makes every write answer 403 MISSING_SCOPES, as for a
	// token without crm.objects.contacts.write.
	ReadOnly bool
}

// Faults sets the probability of each injected fault. The first three are
// exclusive outcomes of one draw, so their sum may not exceed 1.
type Faults struct {
	// ServerErrorRate is the probability of answering 500, 502, 503 or 504
	// without applying the request.
	ServerErrorRate float64 `json:"server_error_rate"`
	// LostResponseRate is the probability of applying the request and then
	// closing the connection without a response.
	LostResponseRate float64 `json:"lost_response_rate"`
	// TimeoutRate is the probability of applying the request and then
	// stalling until the client gives up (or 30 s pass, or Close is
	// called), after which the connection is closed without a response.
	TimeoutRate float64 `json:"timeout_rate"`
	// RateLimitBurstRate is the probability, per request, of exhausting
	// the token's current rate-limit interval at once, so that this and
	// all further requests get 429 until the interval ends.
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

// Request is one entry of the request log. It never holds a token, only a
// short hash of it.
type Request struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Token is the first 8 hex digits of the SHA-256 of the bearer token.
	Token   string `json:"token,omitempty"`
	Account int64  `json:"account,omitempty"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	// Query is the raw query string (idProperty, properties).
	Query     string `json:"query,omitempty"`
	Operation string `json:"operation,omitempty"`
	// Version is "v3" or the date version of the path, e.g. "2026-03".
	Version string `json:"version,omitempty"`
	Status  int    `json:"status"`
	Fault   Fault  `json:"fault"`
	// ContactID is the contact created, read, updated, or named by a
	// conflict.
	ContactID string `json:"contact_id,omitempty"`
	// Committed reports whether the request changed state.
	Committed     bool   `json:"committed"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

const (
	defaultInterval = 10 * time.Second
	unlimited       = 1<<31 - 1
	stallCap        = 30 * time.Second
	maxLog          = 100_000
	maxBodySize     = 1 << 20
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
	tokens   map[string]*account
	byID     map[int64]*account
	faultRNG *rand.Rand
	idRNG    *rand.Rand
	nextID   int64
	log      []Request
	seq      int64
}

var propertyNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

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
	tokens := make([]string, 0, len(cfg.Tokens))
	for tok := range cfg.Tokens {
		tokens = append(tokens, tok)
	}
	slices.Sort(tokens)
	seen := map[int64]bool{}
	for _, tok := range tokens {
		a := cfg.Tokens[tok]
		name := "token " + tokenHash(tok)
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("emulator: %s: %s", name, fmt.Sprintf(format, args...)))
		}
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
			bad("token is empty or contains white space")
		}
		if a.ID <= 0 {
			bad("account id %d is not positive", a.ID)
		} else if seen[a.ID] {
			bad("account id %d used by another token", a.ID)
		}
		seen[a.ID] = true
		if a.RateLimit < 0 || a.DailyLimit < 0 || a.SearchRateLimit < 0 {
			bad("negative rate limit")
		}
		if a.Interval < 0 || (a.Interval > 0 && a.Interval < time.Millisecond) {
			bad("interval %v is not at least 1ms", a.Interval)
		}
		names := map[string]bool{}
		for _, p := range slices.Concat(a.Properties, a.UniqueProperties) {
			switch {
			case !propertyNameRE.MatchString(p):
				bad("property %q is not a valid internal name (lower-case letters, digits, '_')", p)
			case defaultProperty(p):
				bad("property %q is one of HubSpot's default properties", p)
			case names[p]:
				bad("property %q listed twice", p)
			}
			names[p] = true
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
		tokens:   map[string]*account{},
		byID:     map[int64]*account{},
		faultRNG: rand.New(rand.NewPCG(seed, 0x6661756c74)), //nolint:gosec // G404: seeded so that a run's faults repeat
		idRNG:    rand.New(rand.NewPCG(seed, 0x6964)),       //nolint:gosec // G404: seeded so that a run's ids repeat; ids are not secrets
	}
	// Contact ids are decimal and grow with creation, like HubSpot's.
	s.nextID = 10_000_000_000 + s.idRNG.Int64N(1_000_000_000)
	started := now()
	for _, tok := range tokens {
		a := newAccount(cfg.Tokens[tok], started)
		s.tokens[tok] = a
		s.byID[a.cfg.ID] = a
	}
	return s, nil
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

// SetSearchLag changes Config.SearchLag, for existing contacts too.
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

// Contacts returns a snapshot of the contacts of token's account, in
// creation order, or nil for an unknown token.
func (s *Server) Contacts(token string) []Contact {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.tokens[token]
	if a == nil {
		return nil
	}
	return a.snapshot()
}

// Delete removes a contact, as an archive or merge in HubSpot's UI would:
// later reads and updates by its id answer 404. It reports whether the
// contact existed.
func (s *Server) Delete(token, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.tokens[token]
	if a == nil {
		return false
	}
	return a.remove(id)
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
// that serves s. The Server keeps answering other requests.
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

// ServeHTTP serves the HubSpot API and, under /_emulator/, the admin
// endpoints:
//
//	GET /_emulator/contacts?account=ID    contacts with all their properties
//	GET /_emulator/requests[?after=SEQ]   the request log
//	GET, PUT /_emulator/faults            Faults as JSON
//	GET, PUT /_emulator/search_lag        {"search_lag": "30s"}
//
// An API request goes through these steps, each of which may answer it:
// latency; token (401); route (404); rate limits (429, possibly an
// injected burst); the fault draw (5xx); scopes (403); body (400); the
// operation; and finally delivery, which a lost-response or timeout fault
// replaces by closing the connection.
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
	rec := Request{Time: s.now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Fault: FaultNone}
	resp := s.serve(r, &rec)
	rec.Status = resp.status
	rec.CorrelationID = resp.correlationID
	s.record(rec)
	switch rec.Fault {
	case FaultLost:
		abort(w)
	case FaultTimeout:
		s.stall(r.Context())
		abort(w)
	default:
		resp.write(w)
	}
}

func (s *Server) stall(ctx context.Context) {
	t := time.NewTimer(stallCap)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-s.closed:
	}
}

// abort closes the connection without a response.
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
	rt := route(r.Method, r.URL)
	rec.Operation, rec.Version = rt.op, rt.version

	s.mu.Lock()
	a := s.tokens[tok]
	switch {
	case !hasTok:
		defer s.mu.Unlock()
		return s.fail(http.StatusUnauthorized, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
	case a == nil:
		// undocumented: the exact wording for an unknown token.
		defer s.mu.Unlock()
		return s.fail(http.StatusUnauthorized, "INVALID_AUTHENTICATION", "Authentication credentials are invalid.")
	}
	rec.Account = a.cfg.ID
	if rt.op == "" {
		defer s.mu.Unlock()
		return s.fail(http.StatusNotFound, "OBJECT_NOT_FOUND", "Resource not found.")
	}
	eligible := len(s.faults.Operations) == 0 || slices.Contains(s.faults.Operations, rt.op)
	now := s.now()
	burst := eligible && s.roll(s.faults.RateLimitBurstRate)
	var gate rateGate
	if rt.op == OpSearchContacts {
		gate = a.takeSearch(now, burst)
	} else {
		gate = a.take(now, burst)
	}
	if !gate.ok {
		if gate.injected {
			rec.Fault = FaultRateLimit
		}
		resp := s.rateLimited(gate.policy)
		s.mu.Unlock()
		gate.headers(resp.header)
		return resp
	}
	var fault Fault
	if eligible {
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
	if fault == FaultServerError {
		resp = s.serverError()
		rec.Fault = fault
		s.mu.Unlock()
	} else {
		s.mu.Unlock()
		resp = s.apply(r, rec, a, rt)
		if fault != "" {
			rec.Fault = fault
		}
	}
	gate.headers(resp.header)
	return resp
}

func (s *Server) roll(p float64) bool {
	return p > 0 && s.faultRNG.Float64() < p
}

// serverError picks one of the 5xx answers. HubSpot's load balancer answers
// 502 and 504 with HTML rather than the JSON error (undocumented, seen in
// client reports), which the adapter must survive. The caller holds s.mu.
func (s *Server) serverError() *response {
	switch s.faultRNG.IntN(4) {
	case 0:
		return s.fail(http.StatusInternalServerError, "INTERNAL_ERROR", "internal error")
	case 1:
		return htmlResponse(http.StatusBadGateway, "<html><body><h1>502 Bad Gateway</h1></body></html>")
	case 2:
		return s.fail(http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "Service Unavailable")
	default:
		return htmlResponse(http.StatusGatewayTimeout, "<html><body><h1>504 Gateway Time-out</h1></body></html>")
	}
}

// apply checks the request's body and runs the operation.
func (s *Server) apply(r *http.Request, rec *Request, a *account, rt routed) *response {
	write := r.Method != http.MethodGet && rt.op != OpSearchContacts
	if a.cfg.ReadOnly && write {
		return s.locked(func() *response {
			return s.fail(http.StatusForbidden, "MISSING_SCOPES", "This app hasn't been granted all required scopes to make this call.")
		})
	}
	var body map[string]any
	if r.Method == http.MethodPost || r.Method == http.MethodPatch {
		var msg string
		body, msg = readBody(r)
		if msg != "" {
			return s.locked(func() *response { return s.fail(http.StatusBadRequest, "VALIDATION_ERROR", msg) })
		}
	}
	c := &call{s: s, a: a, query: r.URL.Query(), body: body, rec: rec, now: s.now()}
	return s.locked(func() *response {
		switch rt.op {
		case OpCreateContact:
			return c.createContact()
		case OpGetContact:
			return c.getContact(rt.id)
		case OpUpdateContact:
			return c.updateContact(rt.id)
		case OpSearchContacts:
			return c.search()
		case OpListProperties:
			return c.listProperties()
		case OpCreateProperty:
			return c.createProperty()
		}
		panic("emulator: unrouted operation " + rt.op)
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
	a     *account
	query map[string][]string
	body  map[string]any
	rec   *Request
	now   time.Time
}

type routed struct {
	op      string
	version string
	id      string // contact id (or unique value) for get and update
}

var dateVersionRE = regexp.MustCompile(`^20[0-9]{2}-(0[1-9]|1[0-2])$`)

// route maps a method and path to an operation. Both /crm/v3/{kind}/contacts
// and /crm/{kind}/{YYYY-MM}/contacts are accepted. Unsupported methods on
// known paths are unknown routes (404).
func route(method string, u *url.URL) routed {
	raw := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
	seg := make([]string, len(raw))
	for i, p := range raw {
		v, err := url.PathUnescape(p)
		if err != nil {
			return routed{}
		}
		seg[i] = v
	}
	if len(seg) < 4 || seg[0] != "crm" {
		return routed{}
	}
	var kind, version string
	switch {
	case seg[1] == "v3":
		kind, version = seg[2], "v3"
	case dateVersionRE.MatchString(seg[2]):
		kind, version = seg[1], seg[2]
	default:
		return routed{}
	}
	if seg[3] != "contacts" {
		return routed{}
	}
	rest := seg[4:]
	r := routed{version: version}
	switch {
	case kind == "objects" && len(rest) == 0 && method == http.MethodPost:
		r.op = OpCreateContact
	case kind == "objects" && len(rest) == 1 && rest[0] == "search" && method == http.MethodPost:
		r.op = OpSearchContacts
	case kind == "objects" && len(rest) == 1 && rest[0] != "" && method == http.MethodGet:
		r.op, r.id = OpGetContact, rest[0]
	case kind == "objects" && len(rest) == 1 && rest[0] != "" && method == http.MethodPatch:
		r.op, r.id = OpUpdateContact, rest[0]
	case kind == "properties" && len(rest) == 0 && method == http.MethodGet:
		r.op = OpListProperties
	case kind == "properties" && len(rest) == 0 && method == http.MethodPost:
		r.op = OpCreateProperty
	default:
		return routed{}
	}
	return r
}
