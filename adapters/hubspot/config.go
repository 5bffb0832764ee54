package hubspot

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultBaseURL = "https://api.hubapi.com"
	// DefaultAPIVersion is the date-versioned API family the adapter
	// pins. HubSpot ends support for v1 to v3 in September 2027 and advises
	// moving straight to date versions, which are immutable and supported
	// for at least 18 months each.
	DefaultAPIVersion       = "2026-03"
	DefaultLeadStage        = "lead"
	DefaultUserStage        = "customer"
	DefaultMarkerProperty   = "referrer_sync_event_id"
	DefaultTimeout          = 10 * time.Second
	DefaultMaxAttempts      = 4
	DefaultMaxRateLimitWait = 15 * time.Second
	// DefaultSearchRateLimit is HubSpot's search limit: four requests a
	// second per token, separate from the ten-second budget.
	DefaultSearchRateLimit = 4
	// DefaultDailyLimitWait is the RetryAfter reported when the account's
	// daily budget is spent. HubSpot resets it at midnight in the
	// account's time zone, which the API does not tell, so the work is
	// parked and tried again at this interval instead.
	DefaultDailyLimitWait = 15 * time.Minute
)

const (
	maxConnectionName = 64
	maxAttemptsLimit  = 20
	redacted          = "[redacted]"
	// APIVersionV3 selects the numbered /crm/v3/… paths.
	APIVersionV3 = "v3"
)

var (
	// propertyNameRE is HubSpot's internal property name: lower-case
	// letters, digits and '_', starting with a letter.
	propertyNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)
	// stageRE admits default stages' text names and custom stages'
	// numeric ids.
	stageRE       = regexp.MustCompile(`^[a-z0-9_]{1,100}$`)
	dateVersionRE = regexp.MustCompile(`^20[2-9][0-9]-(0[1-9]|1[0-2])$`)
)

// Config describes one HubSpot connection (one account and its token). The
// zero value of each optional field selects its default; New validates it
// with Validate.
//
// Config formats itself without the token (String, GoString, LogValue), so
// logging the configuration never leaks the credential.
type Config struct {
	// Connection names the connection in errors and metrics.
	Connection string
	// BaseURL is the API root (default https://api.hubapi.com); set it for
	// the emulator, or for an account hosted elsewhere.
	BaseURL string
	// Token is a private-app access token or a service key, sent as a
	// bearer token. It never appears in errors, logs or formatted output.
	Token string
	// APIVersion selects the path family: a date version such as
	// "2026-03" (default), giving /crm/objects/2026-03/contacts, or "v3",
	// giving /crm/v3/objects/contacts.
	APIVersion string
	// LeadStage and UserStage are the lifecyclestage values a create
	// sets for create_lead and create_user (defaults "lead" and
	// "customer"): internal names for default stages, numeric ids for
	// custom ones. CheckProperties verifies they are options of the
	// account's lifecyclestage property.
	LeadStage string
	UserStage string
	// MarkerProperty names the custom contact property (a string) in
	// which Create stores domain.Contact.Marker, and which Find returns as
	// domain.Match.Marker (default "referrer_sync_event_id"). It lets the
	// application tell its own lost create from someone else's contact.
	// CreateProperty makes it; CheckProperties requires it.
	MarkerProperty string
	// ExternalIDProperty, if set, names a custom contact property created
	// with unique values (hasUniqueValue) that holds
	// domain.Contact.ExternalID; Find then also looks contacts up by it.
	// HubSpot has no external id of its own: without this property a
	// contact is matched by email only, and a contact with an external id
	// is refused as Permanent.
	ExternalIDProperty string
	// Timeout bounds one HTTP attempt, including reading the body
	// (default 10s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of requests that are safe to repeat
	// (reads, PATCH, and a create only when it certainly was not applied)
	// after 5xx, 408, 423, timeouts and connection errors; default 4.
	MaxAttempts int
	// MaxRateLimitWait bounds how long one call may wait for its turn in
	// the pacing, or for a spent window to refill, before it returns a
	// RateLimited error with RetryAfter set (default 15s).
	MaxRateLimitWait time.Duration
	// SearchRateLimit is the number of search requests a second the
	// connection may send (default 4, HubSpot's limit per token).
	SearchRateLimit int
	// DailyLimitWait is the RetryAfter of a RateLimited error caused by
	// the daily limit (default 15m).
	DailyLimitWait time.Duration
	// HTTPClient sends the requests; nil selects a private client that
	// does not follow redirects.
	HTTPClient *http.Client
	// Observe, if set, is called after every HTTP attempt with a stable
	// operation name (the Op constants), the status (0 when no response
	// arrived) and the attempt's duration. It may be called concurrently.
	Observe func(op string, status int, d time.Duration)
	// RateLimit, if set, is called with the X-HubSpot-RateLimit-* values of
	// every response that carries them: the interval's limit and what is
	// left, and the latest time the interval ends (HubSpot announces the
	// interval's length, not its end). It may be called concurrently.
	RateLimit func(limit, remaining int, reset time.Time)
}

// Validate reports every problem with the configuration at once, each
// naming its field. The token's value never appears in the result.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("hubspot config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch name := strings.TrimSpace(c.Connection); {
	case name == "":
		bad("Connection", "is required")
	case len(name) > maxConnectionName:
		bad("Connection", "is longer than %d bytes", maxConnectionName)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		bad("Connection", "contains control characters")
	}
	if c.BaseURL != "" {
		if err := checkBaseURL(c.BaseURL); err != nil {
			bad("BaseURL", "%v", err)
		}
	}
	switch {
	case c.Token == "":
		bad("Token", "is required")
	case strings.IndexFunc(c.Token, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII
	}) >= 0:
		bad("Token", "contains whitespace, control or non-ASCII characters")
	}
	if v := c.APIVersion; v != "" && v != APIVersionV3 && !dateVersionRE.MatchString(v) {
		bad("APIVersion", "%q is neither %q nor a date version such as %q", v, APIVersionV3, DefaultAPIVersion)
	}
	for _, s := range []struct{ field, v string }{{"LeadStage", c.LeadStage}, {"UserStage", c.UserStage}} {
		if s.v != "" && !stageRE.MatchString(s.v) {
			bad(s.field, "%q is not a lifecycle stage's internal value (lower-case letters, digits, '_')", s.v)
		}
	}
	if c.LeadStage != "" && c.LeadStage == c.UserStage {
		bad("UserStage", "%q is also the LeadStage: leads and users must be told apart", c.UserStage)
	}
	for _, p := range []struct{ field, v string }{{"MarkerProperty", c.MarkerProperty}, {"ExternalIDProperty", c.ExternalIDProperty}} {
		switch {
		case p.v == "":
		case !propertyNameRE.MatchString(p.v):
			bad(p.field, "%q is not a property's internal name (a lower-case letter, then lower-case letters, digits, '_')", p.v)
		case reserved(p.v):
			bad(p.field, "%q is a HubSpot property the adapter sets itself", p.v)
		}
	}
	if c.ExternalIDProperty != "" && c.ExternalIDProperty == c.withDefaults().MarkerProperty {
		bad("ExternalIDProperty", "%q is also the marker property", c.ExternalIDProperty)
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
	if c.SearchRateLimit < 0 {
		bad("SearchRateLimit", "must not be negative, got %d", c.SearchRateLimit)
	}
	if c.DailyLimitWait < 0 {
		bad("DailyLimitWait", "must not be negative, got %s", c.DailyLimitWait)
	}
	return errors.Join(errs...)
}

// reserved are the properties the adapter writes from other inputs than
// the mapping (or that no one may write).
func reserved(name string) bool {
	switch name {
	case propEmail, propLifecycleStage, "hs_object_id", "createdate", "lastmodifieddate":
		return true
	}
	return false
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
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

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	c.Connection = strings.TrimSpace(c.Connection)
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.APIVersion == "" {
		c.APIVersion = DefaultAPIVersion
	}
	if c.LeadStage == "" {
		c.LeadStage = DefaultLeadStage
	}
	if c.UserStage == "" {
		c.UserStage = DefaultUserStage
	}
	if c.MarkerProperty == "" {
		c.MarkerProperty = DefaultMarkerProperty
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
	if c.SearchRateLimit == 0 {
		c.SearchRateLimit = DefaultSearchRateLimit
	}
	if c.DailyLimitWait == 0 {
		c.DailyLimitWait = DefaultDailyLimitWait
	}
	return c
}

// objectsPath is the contacts collection of the pinned version.
func (c Config) objectsPath() string {
	if c.APIVersion == APIVersionV3 {
		return "/crm/v3/objects/contacts"
	}
	return "/crm/objects/" + c.APIVersion + "/contacts"
}

// propertiesPath is the contact properties collection of the pinned
// version.
func (c Config) propertiesPath() string {
	if c.APIVersion == APIVersionV3 {
		return "/crm/v3/properties/contacts"
	}
	return "/crm/properties/" + c.APIVersion + "/contacts"
}

func (c Config) tokenState() string {
	if c.Token == "" {
		return "[unset]"
	}
	return redacted
}

// String formats the configuration without the token.
func (c Config) String() string {
	return fmt.Sprintf("hubspot.Config{Connection:%q BaseURL:%q Token:%s APIVersion:%q LeadStage:%q UserStage:%q MarkerProperty:%q ExternalIDProperty:%q Timeout:%s MaxAttempts:%d MaxRateLimitWait:%s SearchRateLimit:%d DailyLimitWait:%s}",
		c.Connection, redactURL(c.BaseURL), c.tokenState(), c.APIVersion, c.LeadStage, c.UserStage, c.MarkerProperty,
		c.ExternalIDProperty, c.Timeout, c.MaxAttempts, c.MaxRateLimitWait, c.SearchRateLimit, c.DailyLimitWait)
}

// GoString makes %#v as safe as %v.
func (c Config) GoString() string { return c.String() }

// LogValue makes slog render the configuration without the token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("connection", c.Connection),
		slog.String("base_url", redactURL(c.BaseURL)),
		slog.String("token", c.tokenState()),
		slog.String("api_version", c.APIVersion),
		slog.String("lead_stage", c.LeadStage),
		slog.String("user_stage", c.UserStage),
		slog.String("marker_property", c.MarkerProperty),
		slog.String("external_id_property", c.ExternalIDProperty),
		slog.Duration("timeout", c.Timeout),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("max_rate_limit_wait", c.MaxRateLimitWait),
		slog.Int("search_rate_limit", c.SearchRateLimit),
		slog.Duration("daily_limit_wait", c.DailyLimitWait),
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
