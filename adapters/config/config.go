// Package config reads referrer-sync's YAML configuration file and checks
// it, reporting every problem at once with its path, so an operator fixes a
// file in one pass instead of one error per restart.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/referrer-sync/referrer-sync/domain"
)

// File is the configuration file's contract.
type File struct {
	Log             Log                   `yaml:"log"`
	NATS            NATS                  `yaml:"nats"`
	HTTP            HTTP                  `yaml:"http"`
	Metrics         Metrics               `yaml:"metrics"`
	Reload          Reload                `yaml:"reload"`
	Retry           Retry                 `yaml:"retry"`
	Ledger          Ledger                `yaml:"ledger"`
	Connections     map[string]Connection `yaml:"connections"`
	Campaigns       map[string]Campaign   `yaml:"campaigns"`
	DefaultCampaign *Campaign             `yaml:"default_campaign"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error; default info
	Format string `yaml:"format"` // json | text; default json
}

// NATS configures the bus. An empty URL starts an embedded server.
type NATS struct {
	URL               string `yaml:"url"`
	Stream            string `yaml:"stream"`
	Subject           string `yaml:"subject"`
	Consumer          string `yaml:"consumer"`
	DeadLetterSubject string `yaml:"dead_letter_subject"`
	DeadLetterStream  string `yaml:"dead_letter_stream"`
	Workers           int    `yaml:"workers"`
	// PullBatch is how many messages one pull request asks for; the
	// process holds at most this many that no worker has started.
	// Default: workers.
	PullBatch int `yaml:"pull_batch"`
	// AckWait, MaxDeliver and MaxAckPending configure the durable
	// consumer. Unset, the durable is created with 30s, unlimited and
	// 1000, and an existing durable keeps its own values (an operator's
	// `nats consumer edit` survives a restart); set, they are applied.
	// max_deliver: 0 or unset → unlimited, -1 → unlimited (applied).
	AckWait       Duration `yaml:"ack_wait"`
	MaxDeliver    int      `yaml:"max_deliver"`
	MaxAckPending int      `yaml:"max_ack_pending"`
	// Retention of the event stream and the dead-letter stream, applied
	// like the consumer's settings. Unset: 168h and 1 GiB, 720h and
	// 256 MiB at creation. A byte limit of -1 is unlimited.
	StreamMaxAge       Duration `yaml:"stream_max_age"`
	StreamMaxBytes     int64    `yaml:"stream_max_bytes"`
	DeadLetterMaxAge   Duration `yaml:"dead_letter_max_age"`
	DeadLetterMaxBytes int64    `yaml:"dead_letter_max_bytes"`
	Replicas           int      `yaml:"replicas"`
	StoreDir           string   `yaml:"store_dir"` // embedded server only
	// DrainTimeout is the shutdown grace period: on SIGTERM the service
	// stops pulling and waits this long for in-flight messages to finish
	// and be acknowledged; what is still running then is redelivered after
	// ack_wait. Default 25s; keep the orchestrator's grace period (e.g.
	// terminationGracePeriodSeconds) above it plus 5s for HTTP shutdown.
	DrainTimeout Duration `yaml:"drain_timeout"`
}

// HTTP configures the metrics and health listener.
type HTTP struct {
	Listen string `yaml:"listen"`
}

// Metrics configures what the metrics expose.
type Metrics struct {
	// CampaignLabels, when false, labels every campaign "_all" in
	// per-campaign series. Campaign ids are already bounded by the file;
	// this is for deployments with so many campaigns that one series per
	// campaign costs more than it tells. Default true.
	CampaignLabels *bool `yaml:"campaign_labels"`
	// ConsumerPollInterval is how often the durable consumer's pending and
	// ack-pending counts are read from the server. Default 5s.
	ConsumerPollInterval Duration `yaml:"consumer_poll_interval"`
}

// CampaignLabelsEnabled reports whether campaign ids are used as metric
// labels (the default).
func (m Metrics) CampaignLabelsEnabled() bool { return m.CampaignLabels == nil || *m.CampaignLabels }

// Reload configures hot reloading of the campaign settings.
type Reload struct {
	// PollInterval is how often the file's content is checked for a
	// change (a hash of the bytes, so Kubernetes' ConfigMap symlink swaps
	// are seen too). SIGHUP reloads at once. Default 5s.
	PollInterval Duration `yaml:"poll_interval"`
}

// Retry configures redelivery of transient failures.
type Retry struct {
	MaxAttempts  int      `yaml:"max_attempts"`
	InitialDelay Duration `yaml:"initial_delay"`
	MaxDelay     Duration `yaml:"max_delay"`
}

// Ledger configures the exactly-once ledger.
type Ledger struct {
	Bucket   string `yaml:"bucket"`
	Replicas int    `yaml:"replicas"`
	// TTL is how long a person's record is kept after its last write, and
	// so how late a duplicate or a replay is still recognised. Default 30
	// days; at least the streams' max age when they have one.
	TTL Duration `yaml:"ttl"`
	// Lease bounds one create: it is sent only within the lease of being
	// recorded as pending, so a crashed sender's person is free again when
	// it ends. Default 10s; it must leave the delivery time to record the
	// result (below 90 % of nats.ack_wait, by at least a second).
	Lease Duration `yaml:"lease"`
}

// DefaultLease is ledger.lease's default, when nats.ack_wait leaves room
// for it (see LeaseOrDefault).
const DefaultLease = 10 * time.Second

// LeaseOrDefault is ledger.lease with its default applied: 10s, or less
// than half the ack wait when that is short, so a create's result can
// always be recorded within its delivery.
func (l Ledger) LeaseOrDefault(ackWait time.Duration) time.Duration {
	if l.Lease > 0 {
		return time.Duration(l.Lease)
	}
	if ackWait <= 0 {
		ackWait = DefaultAckWait
	}
	return max(time.Second, min(DefaultLease, ackWait*45/100))
}

// DefaultAckWait is nats.ack_wait's default.
const DefaultAckWait = 30 * time.Second

// Connection types: the CRMs a connection can be.
const (
	TypeIntercom = "intercom"
	TypeHubSpot  = "hubspot"
)

// Types are the supported connection types.
var Types = []string{TypeIntercom, TypeHubSpot}

// Connection is one CRM connection. Type decides which keys apply and what
// the campaigns that use the connection may map to (Targets).
type Connection struct {
	Type string `yaml:"type"`
	// Region (intercom only) selects Intercom's us, eu or au API host.
	Region         string `yaml:"region"`
	BaseURL        string `yaml:"base_url"`
	AccessTokenEnv string `yaml:"access_token_env"`
	APIVersion     string `yaml:"api_version"`
	// Timeout bounds one HTTP request to the CRM. Default 10s.
	Timeout Duration `yaml:"timeout"`
	// MarkerAttribute is the custom contact attribute in which every
	// contact this service creates carries the id of the event that
	// created it, so an uncertain create can be found again. Created at
	// start-up when missing. Default "referrer_sync_event_id".
	MarkerAttribute string `yaml:"marker_attribute"`
	// SearchLag is how long after a create the CRM's search may still miss
	// the new contact; an uncertain create of a lead is not repeated within
	// it. Default 5m (Intercom documents "a few minutes").
	SearchLag Duration `yaml:"search_lag"`
	// CommitGrace is how long after its client gave up (a timeout, a
	// reset) a create may still be applied by the CRM. A create whose
	// outcome is unknown is not repeated within its lease plus this grace
	// (plus search_lag when only search can find it). Default 30s.
	CommitGrace Duration `yaml:"commit_grace"`
	// LeadStage and UserStage (hubspot only) are the lifecyclestage values
	// create_lead and create_user set: internal names of default stages,
	// numeric ids of custom ones. Defaults "lead" and "customer".
	LeadStage string `yaml:"lead_stage"`
	UserStage string `yaml:"user_stage"`
	// ExternalIDProperty (hubspot only) names a custom contact property
	// with unique values that holds the external id. HubSpot has none of
	// its own: without it, external_id cannot be mapped.
	ExternalIDProperty string `yaml:"external_id_property"`
}

// HubSpotSearchLag is search_lag's default for hubspot connections. HubSpot
// reads a contact by email at once, without the search index, so an
// uncertain create needs no wait for search; the few seconds cover a read
// that HubSpot does not document as consistent.
const HubSpotSearchLag = 5 * time.Second

// SearchLagOrDefault is search_lag with the connection type's default
// applied: HubSpotSearchLag for hubspot, and 0 for intercom, which leaves
// the application's default (5m, Intercom's "a few minutes") in force.
func (c Connection) SearchLagOrDefault() time.Duration {
	if c.SearchLag > 0 {
		return time.Duration(c.SearchLag)
	}
	if c.Type == TypeHubSpot {
		return HubSpotSearchLag
	}
	return 0
}

// Targets is the mapping vocabulary of the connection's type, for the
// campaigns that write to it: Intercom's fields and custom_attributes.<name>
// for intercom (domain.StandardTargets), contact property names as HubSpot
// spells them for hubspot. An unknown type gets the standard vocabulary
// (its type is reported by Validate).
func (c Connection) Targets() *domain.Targets {
	if c.Type == TypeHubSpot {
		return hubspotTargets(c)
	}
	return domain.StandardTargets()
}

// hubspotPropertyRE is a HubSpot property's internal name.
var hubspotPropertyRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

// hubspotReadOnly are HubSpot properties the adapter sets itself or no one
// may write.
var hubspotReadOnly = []string{"email", "lifecyclestage", "hs_object_id", "createdate", "lastmodifieddate"}

// hubspotTargets: email and phone set the contact's email and phone,
// external_id the external_id_property (only when configured), and any
// other property name a property of that name. Intercom's own fields are
// refused rather than read as property names, so a campaign moved from
// Intercom fails validation instead of writing to properties no one has.
func hubspotTargets(c Connection) *domain.Targets {
	const intercomOnly = "an Intercom contact field that HubSpot contacts do not have; map the value to a custom property instead"
	t := &domain.Targets{
		Fields:     map[string]domain.ContactField{"email": domain.FieldEmail, "phone": domain.FieldPhone},
		CustomName: hubspotPropertyRE,
		CustomNoun: "property name",
		Hint: "a hubspot connection maps to contact properties by their internal names " +
			"(a lower-case letter, then lower-case letters, digits or '_'; e.g. firstname, lastname, referral_link)",
		Refused: map[string]string{
			"lifecyclestage":           "it is set from the campaign's action (lead_stage, user_stage)",
			"hs_object_id":             "it is read-only in HubSpot",
			"createdate":               "it is read-only in HubSpot",
			"lastmodifieddate":         "it is read-only in HubSpot",
			"name":                     "it is Intercom's name field; HubSpot has firstname and lastname",
			"owner_id":                 "it is Intercom's owner field; HubSpot's is the property hubspot_owner_id",
			"avatar":                   intercomOnly,
			"signed_up_at":             intercomOnly,
			"last_seen_at":             intercomOnly,
			"unsubscribed_from_emails": intercomOnly,
		},
	}
	// A marker or external id property named like a field is a connection
	// problem, reported once there rather than again on every campaign.
	refuse := func(name, reason string) {
		if _, isField := t.Fields[name]; !isField {
			t.Refused[name] = reason
		}
	}
	refuse(c.Marker(), "it is the connection's marker property, which the service sets itself")
	if c.ExternalIDProperty != "" {
		t.Fields[domain.TargetExternalID] = domain.FieldExternalID
		refuse(c.ExternalIDProperty, "it is the connection's external_id_property; map external_id instead")
	} else {
		t.Refused[domain.TargetExternalID] = "HubSpot has no external id of its own; set the connection's external_id_property to a custom property with unique values"
	}
	return t
}

// DefaultMarkerAttribute is the marker attribute's default name.
const DefaultMarkerAttribute = "referrer_sync_event_id"

// Marker returns the marker attribute name with its default applied.
func (c Connection) Marker() string {
	if c.MarkerAttribute == "" {
		return DefaultMarkerAttribute
	}
	return c.MarkerAttribute
}

// Campaign is one campaign's settings.
type Campaign struct {
	Connection string    `yaml:"connection"`
	Referrers  Referrers `yaml:"referrers"`
}

// Referrers is what happens when a referrer joins the campaign.
type Referrers struct {
	Action      string  `yaml:"action"`
	OnDuplicate string  `yaml:"on_duplicate"`
	Fields      []Field `yaml:"fields"`
}

// Field maps one source (or fixed value) to one CRM field.
type Field struct {
	From  string `yaml:"from"`
	Value any    `yaml:"value"`
	To    string `yaml:"to"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 30s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Load reads and parses a file and applies environment overrides (NATS_URL).
// It does not validate; call Validate.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path) //nolint:gosec // G304: the operator names the configuration file
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b)
}

// KeyError lists the keys a file names that the contract does not know (or
// values of the wrong type). Parse returns it with the rest of the file
// read, so that Validate can report the other problems at once.
type KeyError struct{ Problems []string }

func (e *KeyError) Error() string {
	return "config: " + strings.Join(e.Problems, "; ")
}

func (f *File) applyEnv() {
	if u, ok := os.LookupEnv("NATS_URL"); ok {
		f.NATS.URL = u
	}
}

// Parse parses a configuration document. Unknown keys are errors: a typo
// that silently does nothing is worse than a refusal to start.
func Parse(b []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("config: %w", err)
		}
		// Unknown keys (or values of the wrong type): read the file again
		// without refusing them, so Validate can report every other
		// problem in the same pass.
		f = File{}
		lenient := yaml.NewDecoder(bytes.NewReader(b))
		_ = lenient.Decode(&f) // the same document decodes; its type errors are already in te
		f.applyEnv()
		return &f, &KeyError{Problems: te.Errors}
	}
	f.applyEnv()
	if f.DefaultCampaign != nil && f.DefaultCampaign.Connection == "" && f.DefaultCampaign.Referrers.Action == "" && len(f.DefaultCampaign.Referrers.Fields) == 0 {
		f.DefaultCampaign = nil // "default_campaign: {}" means none
	}
	return &f, nil
}

var (
	connNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	attrNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,190}$`)
)

// Validate reports every problem in the file at once, each with its path.
func (f *File) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	switch f.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", f.Log.Level)
	}
	switch f.Log.Format {
	case "", "json", "text":
	default:
		add("log.format", "%q is not one of json, text", f.Log.Format)
	}
	if f.NATS.Workers < 0 || f.NATS.Workers > 1024 {
		add("nats.workers", "%d is not between 1 and 1024", f.NATS.Workers)
	}
	if f.NATS.AckWait != 0 && time.Duration(f.NATS.AckWait) < time.Second {
		add("nats.ack_wait", "%s is shorter than 1s", time.Duration(f.NATS.AckWait))
	}
	if f.NATS.PullBatch < 0 || f.NATS.PullBatch > 4096 {
		add("nats.pull_batch", "%d is not between 1 and 4096", f.NATS.PullBatch)
	}
	if f.NATS.MaxDeliver < -1 {
		add("nats.max_deliver", "%d is neither a limit, 0 (unset: unlimited) nor -1 (unlimited)", f.NATS.MaxDeliver)
	}
	if f.NATS.MaxAckPending < -1 {
		add("nats.max_ack_pending", "%d is neither a limit, 0 (unset) nor -1 (unlimited)", f.NATS.MaxAckPending)
	}
	for _, d := range []struct {
		path string
		v    Duration
	}{{"nats.stream_max_age", f.NATS.StreamMaxAge}, {"nats.dead_letter_max_age", f.NATS.DeadLetterMaxAge}} {
		if d.v < 0 || (d.v > 0 && time.Duration(d.v) < time.Minute) {
			add(d.path, "%s is not at least 1m", time.Duration(d.v))
		}
	}
	for _, b := range []struct {
		path string
		v    int64
	}{{"nats.stream_max_bytes", f.NATS.StreamMaxBytes}, {"nats.dead_letter_max_bytes", f.NATS.DeadLetterMaxBytes}} {
		if b.v < -1 {
			add(b.path, "%d is neither a limit, 0 (unset) nor -1 (unlimited)", b.v)
		}
	}
	if f.NATS.DrainTimeout < 0 {
		add("nats.drain_timeout", "must not be negative")
	}
	for _, d := range []struct {
		path string
		v    Duration
	}{{"metrics.consumer_poll_interval", f.Metrics.ConsumerPollInterval}, {"reload.poll_interval", f.Reload.PollInterval}} {
		if d.v < 0 || (d.v > 0 && time.Duration(d.v) < 100*time.Millisecond) {
			add(d.path, "%s is not at least 100ms", time.Duration(d.v))
		}
	}
	if f.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(f.HTTP.Listen); err != nil {
			add("http.listen", "%q is not host:port", f.HTTP.Listen)
		}
	}
	if f.Retry.MaxAttempts < 0 || f.Retry.MaxAttempts > 100 {
		add("retry.max_attempts", "%d is not between 1 and 100", f.Retry.MaxAttempts)
	}
	if f.Retry.InitialDelay < 0 || f.Retry.MaxDelay < 0 {
		add("retry", "delays must not be negative")
	}
	errs = append(errs, f.ledgerProblems()...)
	if f.Retry.MaxDelay != 0 && f.Retry.InitialDelay > f.Retry.MaxDelay {
		add("retry.initial_delay", "is longer than retry.max_delay")
	}
	names := make([]string, 0, len(f.Connections))
	for name := range f.Connections {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := f.Connections[name]
		p := "connections." + name
		if !connNameRE.MatchString(name) {
			add(p, "connection names may contain only letters, digits, '-' and '_'")
		}
		if !slices.Contains(Types, c.Type) {
			add(p+".type", "%q is not a supported CRM (supported: %s)", c.Type, strings.Join(Types, ", "))
		}
		if c.BaseURL != "" && !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://") {
			add(p+".base_url", "%q is not an http(s) URL", c.BaseURL)
		}
		if c.AccessTokenEnv == "" {
			add(p+".access_token_env", "is required (the name of the environment variable holding the token)")
		}
		if c.Timeout < 0 || (c.Timeout > 0 && time.Duration(c.Timeout) < 100*time.Millisecond) {
			add(p+".timeout", "%s is not at least 100ms", time.Duration(c.Timeout))
		}
		if c.SearchLag < 0 {
			add(p+".search_lag", "must not be negative")
		}
		if c.CommitGrace < 0 {
			add(p+".commit_grace", "must not be negative")
		}
		switch c.Type {
		case TypeIntercom:
			errs = append(errs, c.intercomProblems(p)...)
		case TypeHubSpot:
			errs = append(errs, c.hubspotProblems(p)...)
		}
	}
	if len(f.Campaigns) == 0 && f.DefaultCampaign == nil {
		add("campaigns", "no campaign is configured and there is no default_campaign")
	}
	errs = append(errs, f.Catalog().Problems(names)...)
	return errors.Join(errs...)
}

// intercomProblems checks the keys whose meaning is Intercom's.
func (c Connection) intercomProblems(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	switch c.Region {
	case "", "us", "eu", "au":
	default:
		add(p+".region", "%q is not one of us, eu, au", c.Region)
	}
	if c.MarkerAttribute != "" && !attrNameRE.MatchString(c.MarkerAttribute) {
		add(p+".marker_attribute", "%q may contain only letters, digits, '_' and '-'", c.MarkerAttribute)
	}
	if c.APIVersion != "" && !slices.Contains(APIVersions, c.APIVersion) {
		add(p+".api_version", "%q is not one of %s", c.APIVersion, strings.Join(APIVersions, ", "))
	}
	for _, k := range []struct{ key, v string }{{"lead_stage", c.LeadStage}, {"user_stage", c.UserStage}, {"external_id_property", c.ExternalIDProperty}} {
		if k.v != "" {
			add(p+"."+k.key, "applies only to type hubspot")
		}
	}
	return errs
}

var (
	hubspotVersionRE = regexp.MustCompile(`^(v3|20[2-9][0-9]-(0[1-9]|1[0-2]))$`)
	hubspotStageRE   = regexp.MustCompile(`^[a-z0-9_]{1,100}$`)
)

// hubspotProblems checks the keys whose meaning is HubSpot's, by the rules
// the HubSpot adapter applies, so that an operator hears of them from
// validate rather than at start-up.
func (c Connection) hubspotProblems(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Region != "" {
		add(p+".region", "does not apply to type hubspot (set base_url for an account served elsewhere)")
	}
	if c.APIVersion != "" && !hubspotVersionRE.MatchString(c.APIVersion) {
		add(p+".api_version", "%q is neither v3 nor a date version such as 2026-03", c.APIVersion)
	}
	for _, k := range []struct{ key, v string }{{"lead_stage", c.LeadStage}, {"user_stage", c.UserStage}} {
		if k.v != "" && !hubspotStageRE.MatchString(k.v) {
			add(p+"."+k.key, "%q is not a lifecycle stage's internal value (lower-case letters, digits, '_')", k.v)
		}
	}
	lead, user := cmp.Or(c.LeadStage, "lead"), cmp.Or(c.UserStage, "customer")
	if lead == user {
		add(p+".user_stage", "%q is also the lead stage: leads and users must be told apart", user)
	}
	for _, k := range []struct{ key, v string }{{"marker_attribute", c.MarkerAttribute}, {"external_id_property", c.ExternalIDProperty}} {
		switch {
		case k.v == "":
		case !hubspotPropertyRE.MatchString(k.v):
			add(p+"."+k.key, "%q is not a HubSpot property's internal name (a lower-case letter, then lower-case letters, digits, '_')", k.v)
		case slices.Contains(hubspotReadOnly, k.v):
			add(p+"."+k.key, "%q is a HubSpot property the service sets itself", k.v)
		}
	}
	if c.ExternalIDProperty != "" && c.ExternalIDProperty == c.Marker() {
		add(p+".external_id_property", "%q is also the marker property", c.ExternalIDProperty)
	}
	return errs
}

// Reloadable are the top-level keys a running service applies on reload.
// Every other key (nats, connections, http…) is read once at start-up.
var Reloadable = []string{"campaigns", "default_campaign"}

// RestartChanges returns the top-level keys, in file order, whose settings
// differ between f and next other than the Reloadable ones: a reload
// ignores those changes, and the operator must be told they wait for a
// restart. Tokens are read from the environment at start-up and are not
// compared.
func (f *File) RestartChanges(next *File) []string {
	var out []string
	a, b := reflect.ValueOf(*f), reflect.ValueOf(*next)
	t := a.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if slices.Contains(Reloadable, key) {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			out = append(out, key)
		}
	}
	return out
}

// APIVersions are the Intercom API versions the adapter supports. A
// hubspot connection takes "v3" or a date version such as "2026-03".
var APIVersions = []string{"2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16"}

// Warnings returns advice that does not stop the service.
func (f *File) Warnings() []string {
	var out []string
	ids := make([]string, 0, len(f.Campaigns))
	for id := range f.Campaigns {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	cat := f.Catalog()
	for _, id := range ids {
		out = append(out, cat.Campaigns[id].Warnings("campaigns."+id)...)
	}
	if cat.Default != nil {
		out = append(out, cat.Default.Warnings("default_campaign")...)
	}
	return out
}

// Catalog converts the campaign settings to the domain's catalog.
func (f *File) Catalog() *domain.Catalog {
	targets := make(map[string]*domain.Targets, len(f.Connections))
	for name, c := range f.Connections {
		targets[name] = c.Targets()
	}
	cat := &domain.Catalog{Campaigns: make(map[string]domain.Campaign, len(f.Campaigns))}
	for id, c := range f.Campaigns {
		cat.Campaigns[id] = c.domain(targets[c.Connection])
	}
	if f.DefaultCampaign != nil {
		d := f.DefaultCampaign.domain(targets[f.DefaultCampaign.Connection])
		cat.Default = &d
	}
	return cat
}

// domain converts the campaign, whose targets are read in the vocabulary
// of its connection's type (nil for a connection that does not exist).
func (c Campaign) domain(targets *domain.Targets) domain.Campaign {
	out := domain.Campaign{
		Connection:  c.Connection,
		Action:      domain.Action(c.Referrers.Action),
		OnDuplicate: domain.OnDuplicate(c.Referrers.OnDuplicate),
		Targets:     targets,
	}
	for _, f := range c.Referrers.Fields {
		out.Fields = append(out.Fields, domain.Field{From: f.From, Value: f.Value, To: f.To})
	}
	return out
}

// Token returns a connection's access token from its environment variable.
func (c Connection) Token() (string, error) {
	t := strings.TrimSpace(os.Getenv(c.AccessTokenEnv))
	if t == "" {
		return "", fmt.Errorf("environment variable %s is empty or unset", c.AccessTokenEnv)
	}
	return t, nil
}

// ledgerProblems checks the relations the exactly-once protocol relies on.
func (f *File) ledgerProblems() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	ackWait := time.Duration(f.NATS.AckWait)
	if ackWait == 0 {
		ackWait = DefaultAckWait
	}
	lease := time.Duration(f.Ledger.Lease)
	switch {
	case lease < 0:
		add("ledger.lease", "must not be negative")
	case lease > 0 && lease < time.Second:
		add("ledger.lease", "%s is shorter than 1s: a create could not be sent within it", lease)
	}
	// A delivery has 90 % of the ack wait; after its create it must still
	// record the result before the server hands the message to another.
	if budget := ackWait * 9 / 10; lease > 0 && lease > budget-time.Second {
		add("ledger.lease", "%s leaves no time to record a create's result within a delivery's budget (90%% of nats.ack_wait %s = %s); "+
			"lower it or raise nats.ack_wait", lease, ackWait, budget)
	}
	ttl := time.Duration(f.Ledger.TTL)
	if ttl < 0 {
		add("ledger.ttl", "must not be negative")
	} else if ttl > 0 && ttl < time.Hour {
		add("ledger.ttl", "%s is shorter than 1h: duplicates arriving later would be applied again", ttl)
	}
	if ttl == 0 {
		ttl = 30 * 24 * time.Hour
	}
	for _, s := range []struct {
		path string
		age  Duration
	}{{"nats.stream_max_age", f.NATS.StreamMaxAge}, {"nats.dead_letter_max_age", f.NATS.DeadLetterMaxAge}} {
		if s.age > 0 && time.Duration(s.age) > ttl {
			add("ledger.ttl", "%s is shorter than %s (%s): a message still kept there could be replayed after its event is forgotten",
				ttl, s.path, time.Duration(s.age))
		}
	}
	return errs
}
