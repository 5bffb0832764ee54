package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// adminPrefix starts every admin path. HubSpot paths never start with an
// underscore, so the two cannot collide.
const adminPrefix = "/_emulator/"

// searchLagJSON is the body of /_emulator/search_lag.
type searchLagJSON struct {
	SearchLag string `json:"search_lag"` // a time.Duration string, e.g. "30s"
}

// admin serves the admin endpoints (see ServeHTTP). They bypass latency,
// tokens, rate limits, faults and the request log, so that observing the
// emulator never changes what it does.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	write := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v) // v is always encodable; a failed write reaches the client as a cut body
	}
	fail := func(status int, format string, args ...any) {
		write(status, map[string]string{"error": fmt.Sprintf(format, args...)})
	}
	readJSON := func(v any) bool {
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBodySize))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			fail(http.StatusBadRequest, "invalid body: %v", err)
			return false
		}
		return true
	}

	switch path := r.URL.Path[len(adminPrefix):]; {
	case path == "contacts" && r.Method == http.MethodGet:
		id, err := strconv.ParseInt(r.URL.Query().Get("account"), 10, 64)
		if err != nil {
			fail(http.StatusBadRequest, "account: %v", err)
			return
		}
		s.mu.Lock()
		a := s.byID[id]
		var out []contactJSON
		if a != nil {
			out = make([]contactJSON, 0, len(a.contacts))
			for _, ct := range a.contacts {
				out = append(out, render(ct, nil))
			}
		}
		s.mu.Unlock()
		if a == nil {
			fail(http.StatusNotFound, "no account %d", id)
			return
		}
		write(http.StatusOK, out)

	case path == "requests" && r.Method == http.MethodGet:
		var after int64
		if v := r.URL.Query().Get("after"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				fail(http.StatusBadRequest, "after: %v", err)
				return
			}
			after = n
		}
		out := []Request{}
		for _, rec := range s.Requests() {
			if rec.Seq > after {
				out = append(out, rec)
			}
		}
		write(http.StatusOK, out)

	case path == "faults" && r.Method == http.MethodGet:
		write(http.StatusOK, s.Faults())

	case path == "faults" && r.Method == http.MethodPut:
		var f Faults
		if !readJSON(&f) {
			return
		}
		if err := s.SetFaults(f); err != nil {
			fail(http.StatusBadRequest, "%v", err)
			return
		}
		write(http.StatusOK, s.Faults())

	case path == "search_lag" && r.Method == http.MethodGet:
		write(http.StatusOK, searchLagJSON{SearchLag: s.SearchLag().String()})

	case path == "search_lag" && r.Method == http.MethodPut:
		var v searchLagJSON
		if !readJSON(&v) {
			return
		}
		d, err := time.ParseDuration(v.SearchLag)
		if err != nil {
			fail(http.StatusBadRequest, "search_lag: %v", err)
			return
		}
		if err := s.SetSearchLag(d); err != nil {
			fail(http.StatusBadRequest, "%v", err)
			return
		}
		write(http.StatusOK, searchLagJSON{SearchLag: d.String()})

	default:
		fail(http.StatusNotFound, "no admin endpoint %s %s", r.Method, r.URL.Path)
	}
}
