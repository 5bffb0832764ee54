package intercom

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := Config{Connection: "main", Token: testToken}
	tests := []struct {
		name   string
		mod    func(*Config)
		fields []string // every field the error must name; nil = valid
	}{
		{"minimal", func(*Config) {}, nil},
		{"all set", func(c *Config) {
			c.Region, c.APIVersion, c.Timeout, c.MaxAttempts, c.MaxRateLimitWait = "EU", "2.7", time.Second, 20, time.Minute
		}, nil},
		{"base url", func(c *Config) { c.BaseURL = "http://127.0.0.1:8080/" }, nil},
		{"everything wrong", func(c *Config) {
			*c = Config{Region: "mars", BaseURL: "ftp://x", Token: "", APIVersion: "2.17", Timeout: -1, MaxAttempts: -1, MaxRateLimitWait: -time.Second, MarkerAttribute: "a.b"}
		}, []string{"Connection", "Region", "BaseURL", "Token", "APIVersion", "Timeout", "MaxAttempts", "MaxRateLimitWait", "MarkerAttribute"}},
		{"marker attribute with a space", func(c *Config) { c.MarkerAttribute = "event id" }, []string{"MarkerAttribute"}},
		{"marker attribute", func(c *Config) { c.MarkerAttribute = "referrer_sync_event-id" }, nil},
		{"version too old", func(c *Config) { c.APIVersion = "2.6" }, []string{"APIVersion"}},
		{"version 1.x", func(c *Config) { c.APIVersion = "1.4" }, []string{"APIVersion"}},
		{"version padded", func(c *Config) { c.APIVersion = "2.07" }, []string{"APIVersion"}},
		{"version preview", func(c *Config) { c.APIVersion = "Preview" }, []string{"APIVersion"}},
		{"token with newline", func(c *Config) { c.Token = testToken + "\n" }, []string{"Token"}},
		{"token with space", func(c *Config) { c.Token = "a " + testToken }, []string{"Token"}},
		{"base url with query", func(c *Config) { c.BaseURL = "https://x.test/?a=1" }, []string{"BaseURL"}},
		{"base url without host", func(c *Config) { c.BaseURL = "https://" }, []string{"BaseURL"}},
		{"base url with user", func(c *Config) { c.BaseURL = "https://u:p@x.test" }, []string{"BaseURL"}},
		{"too many attempts", func(c *Config) { c.MaxAttempts = 21 }, []string{"MaxAttempts"}},
		{"blank connection", func(c *Config) { c.Connection = "  " }, []string{"Connection"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.mod(&cfg)
			err := cfg.Validate()
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := New(cfg); err != nil {
					t.Fatalf("New() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %v", tt.fields)
			}
			msg := err.Error()
			for _, f := range tt.fields {
				if !strings.Contains(msg, f+":") {
					t.Errorf("Validate() = %q, want it to name %s", msg, f)
				}
			}
			if got, want := strings.Count(msg, "\n")+1, len(tt.fields); got != want {
				t.Errorf("Validate() reported %d problems, want %d: %q", got, want, msg)
			}
			if cfg.Token != "" && strings.Contains(msg, strings.TrimSpace(cfg.Token)) {
				t.Errorf("Validate() = %q leaks the token", msg)
			}
			if _, nerr := New(cfg); nerr == nil {
				t.Errorf("New() = nil error, want the validation error")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := New(Config{Connection: "main", Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.base, "https://api.intercom.io"; got != want {
		t.Errorf("base = %q, want %q", got, want)
	}
	if got, want := c.cfg.APIVersion, "2.16"; got != want {
		t.Errorf("APIVersion = %q, want %q", got, want)
	}
	if got, want := c.cfg.Timeout, 10*time.Second; got != want {
		t.Errorf("Timeout = %s, want %s", got, want)
	}
	if got, want := c.cfg.MaxAttempts, 4; got != want {
		t.Errorf("MaxAttempts = %d, want %d", got, want)
	}
	if got, want := c.cfg.MaxRateLimitWait, 15*time.Second; got != want {
		t.Errorf("MaxRateLimitWait = %s, want %s", got, want)
	}
}

// hostRecorder answers every request itself and remembers the URL, so
// the regional hosts can be tested without a network.
type hostRecorder struct {
	mu   sync.Mutex
	urls []string
}

func (h *hostRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.urls = append(h.urls, r.URL.String())
	h.mu.Unlock()
	body := `{"type":"admin","id":"1","name":"A","email":"a@example.com","app":{"id_code":"ws","name":"W","region":"EU"}}`
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: ioNopCloser(body), Request: r}, nil
}

func TestRegionalHosts(t *testing.T) {
	tests := []struct {
		region, baseURL, want string
	}{
		{"", "", "https://api.intercom.io/me"},
		{"us", "", "https://api.intercom.io/me"},
		{"eu", "", "https://api.eu.intercom.io/me"},
		{"EU", "", "https://api.eu.intercom.io/me"},
		{"au", "", "https://api.au.intercom.io/me"},
		{"eu", "http://127.0.0.1:9999/", "http://127.0.0.1:9999/me"},
		{"", "http://emulator.test/v", "http://emulator.test/v/me"},
	}
	for _, tt := range tests {
		t.Run(tt.region+"|"+tt.baseURL, func(t *testing.T) {
			rt := &hostRecorder{}
			c, err := New(Config{Connection: "c", Region: tt.region, BaseURL: tt.baseURL, Token: testToken, HTTPClient: &http.Client{Transport: rt}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Me(t.Context()); err != nil {
				t.Fatalf("Me: %v", err)
			}
			if len(rt.urls) != 1 || rt.urls[0] != tt.want {
				t.Errorf("requested %v, want [%s]", rt.urls, tt.want)
			}
		})
	}
}

func TestFormattingHidesToken(t *testing.T) {
	cfg := Config{Connection: "main", Token: testToken, BaseURL: "http://127.0.0.1:1"}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	type wrapper struct {
		Cfg    Config
		Client *Client
	}
	var logBuf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logBuf, nil))
	logger.Info("start", "config", cfg, "client", c, "ptr", &cfg)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("start", "config", cfg, "client", c)
	outputs := map[string]string{
		"%v cfg":      fmt.Sprintf("%v", cfg),
		"%+v cfg":     fmt.Sprintf("%+v", cfg),
		"%#v cfg":     fmt.Sprintf("%#v", cfg),
		"%s cfg":      fmt.Sprintf("%s", cfg), //nolint:staticcheck // S1025: the case is what the %s verb prints
		"%v &cfg":     fmt.Sprintf("%v", &cfg),
		"%v client":   fmt.Sprintf("%v", c),
		"%+v client":  fmt.Sprintf("%+v", c),
		"%#v client":  fmt.Sprintf("%#v", c),
		"%+v wrapper": fmt.Sprintf("%+v", wrapper{cfg, c}),
		"slog":        logBuf.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, testToken) {
			t.Errorf("%s = %q contains the token", name, out)
		}
		if !strings.Contains(out, "main") {
			t.Errorf("%s = %q lacks the connection name; the test is not looking at the config", name, out)
		}
	}
	if !strings.Contains(outputs["%v cfg"], redacted) {
		t.Errorf("%%v cfg = %q, want a %s marker", outputs["%v cfg"], redacted)
	}
}
