package emulator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// response is an answer built in full before delivery, so that a fault can
// still replace it by a closed connection.
type response struct {
	status        int
	header        http.Header
	body          []byte
	correlationID string
}

func (r *response) write(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	// A client that went away gets nothing either way, so the error is not
	// kept. G705: the body is the emulator's own encoded answer, sent with
	// the content type set above.
	_, _ = w.Write(r.body) //nolint:gosec // G705: see above
}

// reply encodes v as the JSON body of a response. The caller holds s.mu.
func (s *Server) reply(status int, v any) *response {
	body, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("emulator: encode response: %v", err)) // only our own types: a bug
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json;charset=utf-8")
	return &response{status: status, header: h, body: body}
}

// errorJSON is HubSpot's error body: status, message, correlationId and
// category always, the others when they apply.
type errorJSON struct {
	Status        string              `json:"status"`
	Message       string              `json:"message"`
	CorrelationID string              `json:"correlationId"`
	Category      string              `json:"category,omitempty"`
	SubCategory   string              `json:"subCategory,omitempty"`
	Context       map[string][]string `json:"context,omitempty"`
	Errors        []errorDetail       `json:"errors,omitempty"`
	// The rate-limit answer has errorType and policyName instead of
	// category.
	ErrorType  string `json:"errorType,omitempty"`
	PolicyName string `json:"policyName,omitempty"`
}

type errorDetail struct {
	Message string              `json:"message"`
	Code    string              `json:"code,omitempty"`
	Context map[string][]string `json:"context,omitempty"`
}

// fail answers with the error body. The caller holds s.mu.
func (s *Server) fail(status int, category, msg string) *response {
	return s.failWith(status, errorJSON{Category: category, Message: msg})
}

func (s *Server) failWith(status int, e errorJSON) *response {
	e.Status = "error"
	e.CorrelationID = s.uuid()
	r := s.reply(status, e)
	r.correlationID = e.CorrelationID
	return r
}

// rateLimited is the 429 body as HubSpot documents it for the daily limit;
// the policy names of the other limits are undocumented. The caller holds
// s.mu.
func (s *Server) rateLimited(policy string) *response {
	msg := "You have reached your daily limit."
	switch policy {
	case policyInterval:
		msg = "You have reached your ten secondly limit."
	case policySearch:
		msg = "You have reached your secondly limit."
	}
	return s.failWith(http.StatusTooManyRequests, errorJSON{Message: msg, ErrorType: "RATE_LIMIT", PolicyName: policy})
}

func htmlResponse(status int, body string) *response {
	h := http.Header{}
	h.Set("Content-Type", "text/html")
	return &response{status: status, header: h, body: []byte(body)}
}

// uuid returns a version 4 UUID from the seeded generator. The caller holds
// s.mu.
func (s *Server) uuid() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], s.idRNG.Uint64())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// readBody reads a JSON object body, or returns the message for the 400.
func readBody(r *http.Request) (map[string]any, string) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBodySize+1))
	if err != nil {
		return nil, "Request body could not be read"
	}
	if len(data) > maxBodySize {
		return nil, "Request body is too large"
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, "Invalid input JSON: " + err.Error()
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, "Invalid input JSON: unexpected data after the object"
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, "Invalid input JSON: the body must be a JSON object"
	}
	return m, ""
}

// Rate-limit policy names, as in the 429 body's policyName. Only DAILY is
// documented; the other two are undocumented choices.
const (
	policyDaily    = "DAILY"
	policyInterval = "TEN_SECONDLY_ROLLING"
	policySearch   = "SECONDLY"
)

// rateGate is the outcome of counting one request against the limits, and
// what the response's headers announce.
type rateGate struct {
	ok, injected   bool
	policy         string
	search         bool // search responses carry no rate-limit headers
	max, remaining int
	interval       time.Duration
	daily          int // 0: no daily limit, headers left out
	dailyRemaining int
}

func (g rateGate) headers(h http.Header) {
	if g.search {
		return
	}
	h.Set("X-HubSpot-RateLimit-Interval-Milliseconds", strconv.FormatInt(g.interval.Milliseconds(), 10))
	h.Set("X-HubSpot-RateLimit-Max", strconv.Itoa(g.max))
	h.Set("X-HubSpot-RateLimit-Remaining", strconv.Itoa(g.remaining))
	if g.daily > 0 {
		h.Set("X-HubSpot-RateLimit-Daily", strconv.Itoa(g.daily))
		h.Set("X-HubSpot-RateLimit-Daily-Remaining", strconv.Itoa(g.dailyRemaining))
	}
}

// take counts a request against the account's interval and daily budgets.
// Intervals are fixed windows aligned to multiples of the interval (HubSpot
// calls its limit "rolling" but documents no finer detail); days are UTC.
// burst exhausts the current interval first. The caller holds s.mu.
func (a *account) take(now time.Time, burst bool) rateGate {
	g := rateGate{max: a.cfg.RateLimit, interval: a.interval, daily: a.cfg.DailyLimit}
	if g.max == 0 {
		g.max = unlimited
	}
	win := now.Truncate(a.interval)
	if !win.Equal(a.winStart) {
		a.winStart, a.winCount, a.winBurst = win, 0, false
	}
	day := now.UTC().Format(time.DateOnly)
	if day != a.day {
		a.day, a.dayCount = day, 0
	}
	if burst {
		a.winCount, a.winBurst = g.max, true
	}
	g.dailyRemaining = max(g.daily-a.dayCount, 0)
	switch {
	case g.daily > 0 && a.dayCount >= g.daily:
		g.policy = policyDaily
	case a.winCount >= g.max:
		g.policy, g.injected = policyInterval, a.winBurst
	default:
		a.winCount++
		a.dayCount++
		g.ok = true
		g.dailyRemaining = max(g.daily-a.dayCount, 0)
	}
	g.remaining = max(g.max-a.winCount, 0)
	return g
}

// takeSearch counts a search against the per-second search limit, which is
// separate from (and exempt from) the interval budget.
func (a *account) takeSearch(now time.Time, burst bool) rateGate {
	g := rateGate{search: true}
	limit := a.cfg.SearchRateLimit
	if limit == 0 {
		limit = unlimited
	}
	sec := now.Truncate(time.Second)
	if !sec.Equal(a.searchStart) {
		a.searchStart, a.searchCount, a.searchBurst = sec, 0, false
	}
	if burst {
		a.searchCount, a.searchBurst = limit, true
	}
	if a.searchCount >= limit {
		g.policy, g.injected = policySearch, a.searchBurst
		return g
	}
	a.searchCount++
	g.ok = true
	return g
}
