package intercom

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultAPIVersion       = "2.16"
	DefaultTimeout          = 10 * time.Second
	DefaultMaxAttempts      = 4
	DefaultMaxRateLimitWait = 15 * time.Second
)

// Supported API versions: Intercom publishes separate, independent
// descriptions for 2.7 and later, and the contact surface this adapter uses
// (POST /contacts, search, PUT, data attributes) has the same shape across
// them except for owner_id (integer up to 2.15, string from 2.16).
const (
	minMinorVersion = 7
	maxMinorVersion = 16
	// findByExternalIDMinor is the first version with
	// GET /contacts/find_by_external_id/{external_id}.
	findByExternalIDMinor = 13
	// stringOwnerIDMinor is the first version whose owner_id is a string.
	stringOwnerIDMinor = 16
)

// regionHosts are Intercom's regional API hosts. Calls to the US host are
// routed to the right region only on a best-effort basis, so a workspace
// hosted in the EU or AU should name its region explicitly.
var regionHosts = map[string]string{
	"us": "https://api.intercom.io",
	"eu": "https://api.eu.intercom.io",
	"au": "https://api.au.intercom.io",
}

const (
	maxConnectionName = 64
	maxAttributeName  = 190 // Intercom's limit for custom attribute names
	maxAttemptsLimit  = 20
	redacted          = "[redacted]"
)

// Config describes one Intercom connection (one workspace and its access
// token). The zero value of each optional field selects its default; New
// validates it with Validate.
//
// Config deliberately formats itself without the token (String, GoString,
// LogValue), so that logging the configuration at start-up, or an
// accidental %v in an error, never leaks the credential.
type Config struct {
	// Connection names the connection in errors and in the metric
	// callbacks the caller wires, so several workspaces can be told apart.
	Connection string
	// Region selects Intercom's regional host: "us" (default), "eu" or "au".
	Region string
	// BaseURL overrides Region, for the emulator and tests; an http or
	// https URL without query or fragment.
	BaseURL string
	// Token is the workspace access token, sent as a bearer token. It never
	// appears in errors, logs or formatted output.
	Token string
	// APIVersion is sent as Intercom-Version on every request. It is pinned
	// (default "2.16") rather than left to the app's Developer Hub setting,
	// because request shapes differ between versions. 2.7 to 2.16 are
	// accepted.
	APIVersion string
	// Timeout bounds one HTTP attempt, including reading the body
	// (default 10s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of requests that are safe to repeat
	// (search, get, PUT, and a create only when it certainly was not
	// applied) after 5xx, 408, timeouts and connection errors; default 4.
	// Waiting out a 429 is bounded by MaxRateLimitWait instead.
	MaxAttempts int
	// MaxRateLimitWait bounds how long one call may wait for its turn in
	// the connection's rate-limit pacing, or for an exhausted window to
	// refill, before it returns a RateLimited error with RetryAfter set to
	// when its turn would have come (default 15s). Requests are spread
	// evenly over Intercom's 10-second window from the X-RateLimit-*
	// headers, so the wait is the backlog of this connection's own callers.
	//
	// The default lets a call ride out one exhausted window, and holds the
	// caller meanwhile. Where one process serves several workspaces, a
	// budget of about a second keeps a throttled workspace from holding
	// the workers the others need: its work is refused at once, to be
	// parked and retried after RetryAfter.
	MaxRateLimitWait time.Duration
	// MarkerAttribute names a custom contact attribute of type string in
	// which Create stores domain.Contact.Marker, and by which Find also
	// looks contacts up when domain.Identity.Marker is set. It lets the
	// application find a create whose response was lost even for leads,
	// which nothing else identifies uniquely. Empty disables markers (they
	// are then ignored). The attribute must exist; CreateAttribute makes it.
	MarkerAttribute string
	// HTTPClient sends the requests; nil selects a private client that
	// does not follow redirects.
	HTTPClient *http.Client
	// Observe, if set, is called after every HTTP attempt with a stable
	// operation name ("find_by_external_id", "search", "create", "update",
	// "get", "me", "list_attributes", "create_attribute"), the status
	// (0 when no response arrived) and the attempt's duration. It may be
	// called from many goroutines at once.
	Observe func(op string, status int, d time.Duration)
	// RateLimit, if set, is called with the X-RateLimit-* values of every
	// response that carries them. It may be called from many goroutines at
	// once.
	RateLimit func(limit, remaining int, reset time.Time)
}

// Validate reports every problem with the configuration at once, each
// naming its field, so an operator fixes a configuration in one round. The
// token's value never appears in the result.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("intercom config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch name := strings.TrimSpace(c.Connection); {
	case name == "":
		bad("Connection", "is required")
	case len(name) > maxConnectionName:
		bad("Connection", "is longer than %d bytes", maxConnectionName)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		bad("Connection", "contains control characters")
	}
	if c.Region != "" {
		if _, ok := regionHosts[strings.ToLower(c.Region)]; !ok {
			bad("Region", "%q is not one of us, eu, au", c.Region)
		}
	}
	if c.BaseURL != "" {
		if err := checkBaseURL(c.BaseURL); err != nil {
			bad("BaseURL", "%v", err)
		}
	}
	switch {
	case c.Token == "":
		bad("Token", "is required")
	case strings.TrimSpace(c.Token) != c.Token || strings.IndexFunc(c.Token, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII
	}) >= 0:
		// Never echo the value: it is a credential.
		bad("Token", "contains whitespace, control or non-ASCII characters")
	}
	if m := c.MarkerAttribute; m != "" {
		if len(m) > maxAttributeName || strings.IndexFunc(m, func(r rune) bool { return !attributeRune(r) }) >= 0 {
			bad("MarkerAttribute", "%q may contain only letters, digits, '_' and '-' (at most %d)", m, maxAttributeName)
		}
	}
	if c.APIVersion != "" {
		if _, err := parseVersion(c.APIVersion); err != nil {
			bad("APIVersion", "%v", err)
		}
	}
	if c.Timeout < 0 {
		bad("Timeout", "must not be negative, got %s", c.Timeout)
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > maxAttemptsLimit {
		bad("MaxAttempts", "must be between 1 and %d (0 selects %d), got %d", maxAttemptsLimit, DefaultMaxAttempts, c.MaxAttempts)
	}
	if c.MaxRateLimitWait < 0 {
		bad("MaxRateLimitWait", "must not be negative, got %s", c.MaxRateLimitWait)
	}
	return errors.Join(errs...)
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the input; BaseURL is not a secret, but keep the
		// message short and free of a userinfo password.
		return errors.New("is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme must be http or https, got %q", u.Scheme)
	case u.Host == "":
		return errors.New("has no host")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	case u.User != nil:
		return errors.New("must not carry user information")
	}
	return nil
}

// parseVersion returns the minor number of a supported "2.x" version.
func parseVersion(v string) (int, error) {
	minor, ok := strings.CutPrefix(v, "2.")
	n, err := strconv.Atoi(minor)
	if !ok || err != nil || strconv.Itoa(n) != minor || n < minMinorVersion || n > maxMinorVersion {
		return 0, fmt.Errorf("%q is not a supported version (2.%d to 2.%d)", v, minMinorVersion, maxMinorVersion)
	}
	return n, nil
}

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	c.Connection = strings.TrimSpace(c.Connection)
	c.Region = strings.ToLower(c.Region)
	if c.Region == "" {
		c.Region = "us"
	}
	if c.APIVersion == "" {
		c.APIVersion = DefaultAPIVersion
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxRateLimitWait == 0 {
		c.MaxRateLimitWait = DefaultMaxRateLimitWait
	}
	return c
}

// baseURL is the API root without a trailing slash.
func (c Config) baseURL() string {
	if c.BaseURL != "" {
		return strings.TrimRight(c.BaseURL, "/")
	}
	if h, ok := regionHosts[strings.ToLower(c.Region)]; ok {
		return h
	}
	return regionHosts["us"]
}

func (c Config) tokenState() string {
	if c.Token == "" {
		return "[unset]"
	}
	return redacted
}

// String formats the configuration without the token.
func (c Config) String() string {
	return fmt.Sprintf("intercom.Config{Connection:%q Region:%q BaseURL:%q Token:%s APIVersion:%q Timeout:%s MaxAttempts:%d MaxRateLimitWait:%s MarkerAttribute:%q}",
		c.Connection, c.Region, redactURL(c.BaseURL), c.tokenState(), c.APIVersion, c.Timeout, c.MaxAttempts, c.MaxRateLimitWait, c.MarkerAttribute)
}

// GoString makes %#v as safe as %v.
func (c Config) GoString() string { return c.String() }

// LogValue makes slog render the configuration without the token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("connection", c.Connection),
		slog.String("region", c.Region),
		slog.String("base_url", redactURL(c.BaseURL)),
		slog.String("token", c.tokenState()),
		slog.String("api_version", c.APIVersion),
		slog.Duration("timeout", c.Timeout),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("max_rate_limit_wait", c.MaxRateLimitWait),
		slog.String("marker_attribute", c.MarkerAttribute),
	)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if err != nil && raw != "" {
			return "[invalid]"
		}
		return raw
	}
	return u.Redacted()
}

// attributeRune reports whether r may appear in a custom attribute name.
func attributeRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}
