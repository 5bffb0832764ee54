package emulator

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// response is an answer built in full before delivery, so that a fault can
// still replace it by a closed connection.
type response struct {
	status    int
	header    http.Header
	body      []byte
	requestID string
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

// reply encodes v as the JSON body of a response. The caller holds s.mu
// (request ids come from the seeded generator).
func (s *Server) reply(status int, v any) *response {
	return encode(status, s.uuid(), v)
}

func encode(status int, id string, v any) *response {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own types are encoded; failing here is a bug.
		panic(fmt.Sprintf("emulator: encode response: %v", err))
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Request-Id", id)
	return &response{status: status, header: h, body: append(body, '\n'), requestID: id}
}

// errorList is Intercom's error envelope, components/schemas/error.
type errorList struct {
	Type      string      `json:"type"`
	RequestID string      `json:"request_id"`
	Errors    []errorItem `json:"errors"`
}

type errorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fail answers with the error envelope. The caller holds s.mu.
func (s *Server) fail(status int, code, msg string) *response {
	id := s.uuid()
	return encode(status, id, errorList{Type: "error.list", RequestID: id, Errors: []errorItem{{Code: code, Message: msg}}})
}

// uuid returns a version 4 UUID from the seeded generator, for request_id.
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

// acceptsJSON reports whether the Accept header admits application/json.
// Intercom answers 406 when Accept is missing or admits only other types.
func acceptsJSON(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f <= 0 {
					continue
				}
			}
			switch mt {
			case "application/json", "application/*", "*/*":
				return true
			}
		}
	}
	return false
}

// apiVersion is an Intercom-Version value. Preview sorts after every
// numbered version.
type apiVersion struct {
	major, minor int
	preview      bool
}

// defaultVersion is what an app gets without the header. Intercom uses the
// version set on the app; the spec gives 2.16 as the default.
var defaultVersion = apiVersion{major: 2, minor: 16}

func (v apiVersion) String() string {
	if v.preview {
		return "Preview"
	}
	return fmt.Sprintf("%d.%d", v.major, v.minor)
}

func (v apiVersion) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

// version parses the Intercom-Version header: 1.0-1.4, 2.0-2.16 or Preview
// (the channel formerly called Unstable, which is no longer accepted).
func version(h string) (apiVersion, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return defaultVersion, true
	}
	if h == "Preview" {
		return apiVersion{major: 2, minor: 1 << 10, preview: true}, true
	}
	maj, minStr, ok := strings.Cut(h, ".")
	if !ok {
		return defaultVersion, false
	}
	m, err1 := strconv.Atoi(maj)
	n, err2 := strconv.Atoi(minStr)
	if err1 != nil || err2 != nil || strconv.Itoa(n) != minStr {
		return defaultVersion, false
	}
	switch {
	case m == 1 && n >= 0 && n <= 4, m == 2 && n >= 0 && n <= 16:
		return apiVersion{major: m, minor: n}, true
	}
	return defaultVersion, false
}

// fields is a decoded JSON object body; numbers stay json.Number so that
// integers and floats can be told apart.
type fields map[string]any

// readBody reads a JSON object body, or returns the message for the 400.
func readBody(r *http.Request) (fields, string) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBodySize+1))
	if err != nil {
		return nil, "Request body could not be read"
	}
	if len(data) > maxBodySize {
		return nil, "Request body is too large"
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, "There was a problem in the JSON you submitted: " + err.Error()
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, "There was a problem in the JSON you submitted: unexpected data after the object"
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, "There was a problem in the JSON you submitted: the body must be a JSON object"
	}
	return m, ""
}

func typeMsg(k, want string) string { return fmt.Sprintf("'%s' must be %s", k, want) }

// str reads a string field that the spec does not mark nullable.
func (f fields) str(k string) (v string, present bool, msg string) {
	x, ok := f[k]
	if !ok {
		return "", false, ""
	}
	s, ok := x.(string)
	if !ok {
		return "", true, typeMsg(k, "a string")
	}
	return s, true, ""
}

// nullStr reads a nullable string field; nil means JSON null.
func (f fields) nullStr(k string) (v *string, present bool, msg string) {
	x, ok := f[k]
	if !ok || x == nil {
		return nil, ok, ""
	}
	s, ok := x.(string)
	if !ok {
		return nil, true, typeMsg(k, "a string or null")
	}
	return &s, true, ""
}

// nullBool reads a nullable boolean field.
func (f fields) nullBool(k string) (v *bool, present bool, msg string) {
	x, ok := f[k]
	if !ok || x == nil {
		return nil, ok, ""
	}
	b, ok := x.(bool)
	if !ok {
		return nil, true, typeMsg(k, "a boolean or null")
	}
	return &b, true, ""
}

// nullInt reads a nullable integer field (Unix seconds and such).
func (f fields) nullInt(k string) (v *int64, present bool, msg string) {
	x, ok := f[k]
	if !ok || x == nil {
		return nil, ok, ""
	}
	n, ok := x.(json.Number)
	if !ok {
		return nil, true, typeMsg(k, "an integer or null")
	}
	i, err := n.Int64()
	if err != nil {
		return nil, true, typeMsg(k, "an integer or null")
	}
	return &i, true, ""
}
