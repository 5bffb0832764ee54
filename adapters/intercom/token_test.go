package intercom

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
)

// errorTexts returns every string an error could be logged as: its text,
// its %+v and %#v forms, and the text of everything it wraps.
func errorTexts(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		out = append(out, e.Error(), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e))
		switch u := e.(type) { //nolint:errorlint // walks the chain one level at a time, as errors.As does
		case *scrubbedError:
			// It exists to keep errors.Is/As working on a foreign error
			// whose own text quoted the token; only its text is ours.
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}

// echoToken answers with the request's Authorization header inside the
// body, the way a misbehaving proxy or server might.
func echoToken(status int, kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		tok := strings.TrimPrefix(auth, "Bearer ")
		w.Header().Set("X-Echo", auth)
		switch kind {
		case "json":
			errReply(status, "token_"+tok, "bad token "+tok+" in "+auth)(w, r)
		case "conflict":
			errReply(status, "conflict", "exists for "+tok)(w, r)
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(status)
			_, _ = fmt.Fprintf(w, "<html>%s<pre>%s</pre></html>", strings.Repeat("x", 150), auth)
		case "long":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = fmt.Fprintf(w, `{"type":"error.list","errors":[{"code":"c","message":"%s%s"}]}`, strings.Repeat("y", maxMessageLen-10), tok)
		default:
			w.WriteHeader(status)
			_, _ = fmt.Fprint(w, auth)
		}
	}
}

// leakyTransport fails with an error that quotes the request headers.
type leakyTransport struct{}

func (leakyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("proxy refused request with headers %v", r.Header)
}

func TestTokenNeverInErrors(t *testing.T) {
	type op struct {
		name string
		run  func(context.Context, *Client) error
	}
	ops := []op{
		{"find", func(ctx context.Context, c *Client) error {
			_, err := c.Find(ctx, domain.Identity{Email: "a@example.com"})
			return err
		}},
		{"find by external id", func(ctx context.Context, c *Client) error {
			_, err := c.Find(ctx, domain.Identity{Email: "a@example.com", ExternalID: "x"})
			return err
		}},
		{"create", func(ctx context.Context, c *Client) error {
			_, err := c.Create(ctx, domain.Contact{Role: domain.RoleUser, Email: "a@example.com", ExternalID: "x"})
			return err
		}},
		{"update", func(ctx context.Context, c *Client) error {
			return c.Update(ctx, "6762f0dd1bb69f9f2193bb83", domain.Contact{Name: "A"})
		}},
		{"me", func(ctx context.Context, c *Client) error { _, err := c.Me(ctx); return err }},
		{"attributes", func(ctx context.Context, c *Client) error { _, err := c.Attributes(ctx); return err }},
		{"create attribute", func(ctx context.Context, c *Client) error { return c.CreateAttribute(ctx, "x", "string", "") }},
	}
	type path struct {
		name    string
		base    func(t *testing.T) string
		mod     func(*Config)
		wantAny bool // some op must fail, proving the path is exercised
	}
	server := func(h http.HandlerFunc) func(*testing.T) string {
		return func(t *testing.T) string { return serve(t, h).URL }
	}
	var paths []path
	for _, status := range []int{400, 401, 403, 404, 405, 406, 408, 409, 410, 413, 422, 429, 500, 502, 503, 302} {
		for _, kind := range []string{"json", "html", "long", "text"} {
			paths = append(paths, path{name: fmt.Sprint(status, " ", kind), base: server(echoToken(status, kind)), wantAny: true})
		}
	}
	paths = append(paths,
		path{name: "409 conflict without id", base: server(echoToken(409, "conflict")), wantAny: true},
		path{name: "lost response", base: server(lostResponse), wantAny: true},
		path{name: "timeout", base: func(t *testing.T) string { return serve(t, hang(t)).URL },
			mod: func(c *Config) { c.Timeout = 20 * time.Millisecond; c.MaxAttempts = 2 }, wantAny: true},
		path{name: "dial error", base: closedURL, mod: func(c *Config) { c.MaxAttempts = 2 }, wantAny: true},
		path{name: "malformed success", base: server(func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprint(w, "{") }), wantAny: true},
		path{name: "leaky transport", base: func(*testing.T) string { return "http://intercom.test" },
			mod: func(c *Config) { c.HTTPClient = &http.Client{Transport: leakyTransport{}}; c.MaxAttempts = 1 }, wantAny: true},
	)
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			c := newTestClient(t, p.base(t), newFakeClock(), func(c *Config) {
				c.MaxRateLimitWait = time.Millisecond
				if p.mod != nil {
					p.mod(c)
				}
			})
			failed := 0
			for _, o := range ops {
				err := o.run(t.Context(), c)
				if err == nil {
					continue
				}
				failed++
				for _, s := range errorTexts(err) {
					if strings.Contains(s, testToken) {
						t.Errorf("%s: error text %q contains the token", o.name, s)
					}
				}
			}
			if p.wantAny && failed == 0 {
				t.Errorf("no operation failed; the path is not exercised")
			}
		})
	}

	t.Run("scrubbed message still says something", func(t *testing.T) {
		c := newTestClient(t, serve(t, echoToken(400, "json")).URL, nil, nil)
		err := c.Update(t.Context(), "1", domain.Contact{Name: "A"})
		if err == nil || !strings.Contains(err.Error(), "bad token "+redacted) {
			t.Errorf("Update() = %v, want the message with the token redacted", err)
		}
	})
	t.Run("leaky transport keeps errors.As", func(t *testing.T) {
		c := newTestClient(t, "http://intercom.test", nil, func(c *Config) {
			c.HTTPClient = &http.Client{Transport: leakyTransport{}}
			c.MaxAttempts = 1
		})
		_, err := c.Me(t.Context())
		var ue interface{ Timeout() bool } // *url.Error
		if err == nil || strings.Contains(err.Error(), testToken) || !errors.As(err, &ue) {
			t.Errorf("Me() = %v, want a scrubbed error that still wraps the *url.Error", err)
		}
	})
}
