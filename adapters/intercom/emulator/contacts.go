package emulator

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Contact is a stored Intercom contact, as returned by Server.Contacts for
// assertions. Pointer fields are nil where the API shows null.
type Contact struct {
	// ID is 24 lowercase hex digits, laid out like Intercom's (a Unix-seconds
	// prefix, then per-server and counter bytes), so ids sort by creation.
	ID string
	// WorkspaceID is the owning Workspace.ID.
	WorkspaceID string
	// Role is "user" or "lead".
	Role string
	// ExternalID and Email are "" when not set.
	ExternalID string
	Email      string
	// EmailVerified is only accepted from API version 2.16 on, and not
	// part of the contact the API returns.
	EmailVerified *bool
	// Phone, Name and Avatar (an image URL) are nil when null.
	Phone, Name, Avatar *string
	// OwnerID is an admin id, decimal digits: a string from API version
	// 2.16 on, an integer before, so it is kept in the common form.
	OwnerID                *string
	UnsubscribedFromEmails bool
	// SignedUpAt and LastSeenAt are Unix seconds, nil when null.
	SignedUpAt, LastSeenAt *int64
	// CreatedAt is kept exactly, because search lag is measured from it;
	// the API reports Unix seconds.
	CreatedAt, UpdatedAt time.Time
	// CustomAttributes holds the values as decoded from JSON (numbers as
	// json.Number).
	CustomAttributes map[string]any
}

func (c *Contact) clone() Contact {
	out := *c
	out.CustomAttributes = maps.Clone(c.CustomAttributes)
	return out
}

func (c *Contact) emailDomain() string {
	_, d, ok := strings.Cut(c.Email, "@")
	if !ok {
		return ""
	}
	return strings.ToLower(d)
}

// workspace is the state behind one token. Its fields are guarded by
// Server.mu.
type workspace struct {
	cfg      Workspace
	adminID  string
	created  time.Time
	contacts []*Contact // creation order
	byID     map[string]*Contact
	byExt    map[string]*Contact
	// userByEmail indexes users (never leads) by lowercased email: the
	// uniqueness Intercom enforces on create.
	userByEmail map[string]*Contact
	// byEmail indexes every contact by the fold key of its email, for
	// search (see candidates).
	byEmail    map[string][]*Contact
	attrs      []*attribute // custom attributes, creation order
	attrByName map[string]*attribute

	winStart int64 // Unix seconds at which the current window began
	winCount int
	winBurst bool // the window was exhausted by an injected burst
}

func newWorkspace(cfg Workspace, created time.Time) *workspace {
	h := fnv.New32a()
	_, _ = h.Write([]byte(cfg.ID)) // a hash.Hash never returns an error
	if cfg.Region == "" {
		cfg.Region = "US"
	}
	cfg.Attributes = nil // now held in attrs
	return &workspace{
		cfg:         cfg,
		adminID:     strconv.FormatUint(100_000_000+uint64(h.Sum32())%900_000_000, 10),
		created:     created,
		byID:        map[string]*Contact{},
		byExt:       map[string]*Contact{},
		userByEmail: map[string]*Contact{},
		byEmail:     map[string][]*Contact{},
		attrByName:  map[string]*attribute{},
	}
}

func (ws *workspace) snapshot() []Contact {
	out := make([]Contact, len(ws.contacts))
	for i, c := range ws.contacts {
		out[i] = c.clone()
	}
	return out
}

// take counts a request against the token's current fixed 10-second window
// (aligned to multiples of 10 Unix seconds). burst exhausts the window
// first. ok is false when the request must be refused with 429; injected
// says the window was exhausted by a burst.
func (ws *workspace) take(now time.Time, burst bool) (limit, remaining int, reset int64, injected, ok bool) {
	limit = ws.cfg.RateLimit
	if limit == 0 {
		limit = unlimited
	}
	sec := now.Unix()
	start := sec - ((sec%10)+10)%10
	if start != ws.winStart {
		ws.winStart, ws.winCount, ws.winBurst = start, 0, false
	}
	if burst {
		ws.winCount, ws.winBurst = limit, true
	}
	reset = start + 10
	if ws.winCount >= limit {
		return limit, 0, reset, ws.winBurst, false
	}
	ws.winCount++
	return limit, limit - ws.winCount, reset, false, true
}

// conflict returns the contact that stops self (nil for a new contact) from
// having role, externalID and email: Intercom's 409. External ids are unique
// among all contacts; emails only among users, since leads may share an
// email with anyone.
func (ws *workspace) conflict(self *Contact, role, externalID, email string) *Contact {
	if externalID != "" {
		if o := ws.byExt[externalID]; o != nil && o != self {
			return o
		}
	}
	if role == "user" && email != "" {
		if o := ws.userByEmail[strings.ToLower(email)]; o != nil && o != self {
			return o
		}
	}
	return nil
}

func (ws *workspace) unindex(c *Contact) {
	if c.ExternalID != "" && ws.byExt[c.ExternalID] == c {
		delete(ws.byExt, c.ExternalID)
	}
	if k := strings.ToLower(c.Email); c.Role == "user" && k != "" && ws.userByEmail[k] == c {
		delete(ws.userByEmail, k)
	}
	ws.unindexEmail(c)
}

func (ws *workspace) index(c *Contact) {
	ws.byID[c.ID] = c
	if c.ExternalID != "" {
		ws.byExt[c.ExternalID] = c
	}
	if c.Role == "user" && c.Email != "" {
		ws.userByEmail[strings.ToLower(c.Email)] = c
	}
	ws.indexEmail(c)
}

// newID returns an id shaped like Intercom's: 4 bytes of Unix seconds, 5
// bytes fixed per server, a 3-byte counter. The caller holds s.mu.
func (s *Server) newID(t time.Time) string {
	s.idCount++
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(t.Unix())) //nolint:gosec // G115: Intercom's ids hold the Unix second in 32 bits too
	copy(b[4:9], s.idTail[:])
	var count [4]byte
	binary.BigEndian.PutUint32(count[:], s.idCount)
	copy(b[9:], count[1:]) // the low three bytes
	return hex.EncodeToString(b[:])
}

// opt is a body field that may be absent.
type opt[T any] struct {
	set bool
	v   T
}

// contactInput is the parsed body of a create or update. Fields the spec
// marks nullable hold pointers (nil for null).
type contactInput struct {
	role, externalID, email      opt[string]
	emailVerified, unsubscribed  opt[*bool]
	phone, name, avatar, ownerID opt[*string]
	signedUpAt, lastSeenAt       opt[*int64]
	custom                       opt[map[string]any]
}

// parseContact reads the fields of create_contact_request and
// update_contact_request (they have the same properties), checking each
// against the spec's type for the request's version. Unknown fields are
// ignored: the spec does not close these objects.
func (c *call) parseContact() (in contactInput, msg string) {
	f := c.body
	pick := func(m string) {
		if msg == "" {
			msg = m
		}
	}
	var m string
	in.role.v, in.role.set, m = f.str("role")
	pick(m)
	in.externalID.v, in.externalID.set, m = f.str("external_id")
	pick(m)
	in.email.v, in.email.set, m = f.str("email")
	pick(m)
	in.phone.v, in.phone.set, m = f.nullStr("phone")
	pick(m)
	in.name.v, in.name.set, m = f.nullStr("name")
	pick(m)
	in.avatar.v, in.avatar.set, m = f.nullStr("avatar")
	pick(m)
	in.signedUpAt.v, in.signedUpAt.set, m = f.nullInt("signed_up_at")
	pick(m)
	in.lastSeenAt.v, in.lastSeenAt.set, m = f.nullInt("last_seen_at")
	pick(m)
	in.unsubscribed.v, in.unsubscribed.set, m = f.nullBool("unsubscribed_from_emails")
	pick(m)
	if c.ver.atLeast(2, 16) {
		// email_verified is new in 2.16; older versions ignore it.
		in.emailVerified.v, in.emailVerified.set, m = f.nullBool("email_verified")
		pick(m)
		// owner_id became a string in 2.16 (a breaking change).
		in.ownerID.v, in.ownerID.set, m = f.nullStr("owner_id")
		pick(m)
	} else {
		var n *int64
		n, in.ownerID.set, m = f.nullInt("owner_id")
		pick(m)
		if n != nil {
			s := strconv.FormatInt(*n, 10)
			in.ownerID.v = &s
		}
	}
	if msg != "" {
		return in, msg
	}
	if in.role.set && in.role.v != "user" && in.role.v != "lead" {
		return in, fmt.Sprintf("'role' must be 'user' or 'lead', not '%s'", in.role.v)
	}
	if in.externalID.set && strings.TrimSpace(in.externalID.v) == "" {
		return in, "'external_id' must not be blank"
	}
	if in.email.set && !validEmail(in.email.v) {
		return in, fmt.Sprintf("Invalid email address '%s'", in.email.v)
	}
	if in.emailVerified.set && !in.email.set {
		return in, "'email_verified' must be supplied together with 'email'"
	}
	if p := in.ownerID.v; p != nil && !digits(*p) {
		return in, fmt.Sprintf("'owner_id' %q is not the id of an admin", *p)
	}
	if x, ok := f["custom_attributes"]; ok {
		in.custom.set = true
		switch v := x.(type) {
		case nil:
		case map[string]any:
			for k, val := range v {
				if a := c.ws.attrByName[strings.ToLower(k)]; a == nil || a.model != "contact" || a.name != k {
					return in, fmt.Sprintf("Custom attribute '%s' does not exist", k)
				}
				if _, ok := val.(map[string]any); ok {
					return in, fmt.Sprintf("Custom attribute '%s' must not be an object", k)
				}
			}
			in.custom.v = v
		default:
			return in, typeMsg("custom_attributes", "an object or null")
		}
	}
	return in, ""
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// validEmail is a plain check (one @, a dotted domain, no spaces or
// specials) that catches the mistakes a mapping bug produces. Intercom's
// exact rule and error message are undocumented.
func validEmail(e string) bool {
	if len(e) > 254 || strings.ContainsAny(e, " \t\r\n<>()[],;:\"\\") {
		return false
	}
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || strings.Contains(domain, "@") {
		return false
	}
	return strings.Contains(domain, ".") && !strings.HasPrefix(domain, ".") &&
		!strings.HasSuffix(domain, ".") && !strings.Contains(domain, "..")
}

// apply writes the input's fields onto c.
func (in *contactInput) apply(c *Contact) {
	if in.role.set {
		c.Role = in.role.v
	}
	if in.externalID.set {
		c.ExternalID = in.externalID.v
	}
	if in.email.set {
		c.Email = in.email.v
	}
	set := func(dst **string, o opt[*string]) {
		if o.set {
			*dst = o.v
		}
	}
	set(&c.Phone, in.phone)
	set(&c.Name, in.name)
	set(&c.Avatar, in.avatar)
	set(&c.OwnerID, in.ownerID)
	if in.emailVerified.set {
		c.EmailVerified = in.emailVerified.v
	}
	if in.unsubscribed.set {
		// null leaves the default, false: the contact schema's field is
		// not nullable.
		c.UnsubscribedFromEmails = in.unsubscribed.v != nil && *in.unsubscribed.v
	}
	if in.signedUpAt.set {
		c.SignedUpAt = in.signedUpAt.v
	}
	if in.lastSeenAt.set {
		c.LastSeenAt = in.lastSeenAt.v
	}
	if in.custom.set {
		if in.custom.v == nil {
			// custom_attributes: null clears them all, like other
			// nullable fields set to null.
			clear(c.CustomAttributes)
		}
		for k, v := range in.custom.v {
			if v == nil {
				delete(c.CustomAttributes, k)
			} else {
				c.CustomAttributes[k] = v
			}
		}
	}
}

func (c *call) conflictResponse(o *Contact) *response {
	c.rec.ContactID = o.ID
	return c.s.fail(http.StatusConflict, "conflict", "A contact matching those details already exists with id="+o.ID)
}

// createContact serves POST /contacts.
func (c *call) createContact() *response {
	in, msg := c.parseContact()
	if msg == "" && !in.email.set && !in.externalID.set && !in.role.set {
		msg = "Please provide at least one of email, external_id or role"
	}
	if msg != "" {
		return c.s.fail(http.StatusBadRequest, "parameter_invalid", msg)
	}
	if !in.role.set {
		// Inference: the spec gives no default role; third-party
		// documentation and SDK behaviour point to "user".
		in.role = opt[string]{set: true, v: "user"}
	}
	if o := c.ws.conflict(nil, in.role.v, in.externalID.v, in.email.v); o != nil {
		return c.conflictResponse(o)
	}
	now := c.s.now()
	ct := &Contact{
		ID:               c.s.newID(now),
		WorkspaceID:      c.ws.cfg.ID,
		CreatedAt:        now,
		UpdatedAt:        now,
		CustomAttributes: map[string]any{},
	}
	in.apply(ct)
	if !in.signedUpAt.set && ct.Role == "user" {
		// The spec's examples show users created through the API with
		// signed_up_at equal to created_at, and leads without one.
		t := now.Unix()
		ct.SignedUpAt = &t
	}
	c.ws.contacts = append(c.ws.contacts, ct)
	c.ws.index(ct)
	c.rec.ContactID, c.rec.Committed = ct.ID, true
	return c.s.reply(http.StatusOK, c.render(ct))
}

// showContact serves GET /contacts/{id}. Lookups by id are immediately
// consistent, unlike search.
func (c *call) showContact(id string) *response {
	ct := c.ws.byID[id]
	if ct == nil {
		return c.s.fail(http.StatusNotFound, "not_found", "User Not Found")
	}
	c.rec.ContactID = ct.ID
	return c.s.reply(http.StatusOK, c.render(ct))
}

// findByExternalID serves GET /contacts/find_by_external_id/{external_id},
// which exists from 2.13 on and finds users only.
func (c *call) findByExternalID(ext string) *response {
	if !c.ver.atLeast(2, 13) {
		return c.s.fail(http.StatusNotFound, "not_found", "Resource Not Found")
	}
	ct := c.ws.byExt[ext]
	if ct == nil || ct.Role != "user" {
		return c.s.fail(http.StatusNotFound, "not_found", "User Not Found")
	}
	c.rec.ContactID = ct.ID
	return c.s.reply(http.StatusOK, c.render(ct))
}

// updateContact serves PUT /contacts/{id}.
func (c *call) updateContact(id string) *response {
	ct := c.ws.byID[id]
	if ct == nil {
		return c.s.fail(http.StatusNotFound, "not_found", "User Not Found")
	}
	in, msg := c.parseContact()
	if msg == "" && in.role.set && in.role.v == "lead" && ct.Role == "user" {
		// Chosen rule: Intercom only ever turns leads into users (by
		// merge, or when they sign up), never back.
		msg = "A user cannot be converted into a lead"
	}
	if msg != "" {
		return c.s.fail(http.StatusBadRequest, "parameter_invalid", msg)
	}
	next := ct.clone()
	in.apply(&next)
	if o := c.ws.conflict(ct, next.Role, next.ExternalID, next.Email); o != nil {
		return c.conflictResponse(o)
	}
	c.ws.unindex(ct)
	next.UpdatedAt = c.s.now()
	*ct = next
	c.ws.index(ct)
	c.rec.ContactID, c.rec.Committed = ct.ID, true
	return c.s.reply(http.StatusOK, c.render(ct))
}

// contactJSON is components/schemas/contact plus the fields the spec's
// examples show (subscription-type stubs, UTM fields, referrer,
// enabled_push_messaging). Absent values are null, as in the examples.
type contactJSON struct {
	Type                      string         `json:"type"`
	ID                        string         `json:"id"`
	WorkspaceID               string         `json:"workspace_id"`
	ExternalID                *string        `json:"external_id"`
	Role                      string         `json:"role"`
	Email                     string         `json:"email"`
	EmailDomain               string         `json:"email_domain"`
	Phone                     *string        `json:"phone"`
	Name                      *string        `json:"name"`
	Avatar                    *avatarJSON    `json:"avatar"`
	OwnerID                   any            `json:"owner_id"`
	SocialProfiles            listJSON       `json:"social_profiles"`
	HasHardBounced            bool           `json:"has_hard_bounced"`
	MarkedEmailAsSpam         bool           `json:"marked_email_as_spam"`
	UnsubscribedFromEmails    bool           `json:"unsubscribed_from_emails"`
	CreatedAt                 int64          `json:"created_at"`
	UpdatedAt                 int64          `json:"updated_at"`
	SignedUpAt                *int64         `json:"signed_up_at"`
	LastSeenAt                *int64         `json:"last_seen_at"`
	LastRepliedAt             *int64         `json:"last_replied_at"`
	LastContactedAt           *int64         `json:"last_contacted_at"`
	LastEmailOpenedAt         *int64         `json:"last_email_opened_at"`
	LastEmailClickedAt        *int64         `json:"last_email_clicked_at"`
	LanguageOverride          *string        `json:"language_override"`
	Browser                   *string        `json:"browser"`
	BrowserVersion            *string        `json:"browser_version"`
	BrowserLanguage           *string        `json:"browser_language"`
	OS                        *string        `json:"os"`
	Location                  locationJSON   `json:"location"`
	AndroidAppName            *string        `json:"android_app_name"`
	AndroidAppVersion         *string        `json:"android_app_version"`
	AndroidDevice             *string        `json:"android_device"`
	AndroidOSVersion          *string        `json:"android_os_version"`
	AndroidSDKVersion         *string        `json:"android_sdk_version"`
	AndroidLastSeenAt         *int64         `json:"android_last_seen_at"`
	IOSAppName                *string        `json:"ios_app_name"`
	IOSAppVersion             *string        `json:"ios_app_version"`
	IOSDevice                 *string        `json:"ios_device"`
	IOSOSVersion              *string        `json:"ios_os_version"`
	IOSSDKVersion             *string        `json:"ios_sdk_version"`
	IOSLastSeenAt             *int64         `json:"ios_last_seen_at"`
	CustomAttributes          map[string]any `json:"custom_attributes"`
	Tags                      stubJSON       `json:"tags"`
	Notes                     stubJSON       `json:"notes"`
	Companies                 stubJSON       `json:"companies"`
	OptedOutSubscriptionTypes stubJSON       `json:"opted_out_subscription_types"`
	OptedInSubscriptionTypes  stubJSON       `json:"opted_in_subscription_types"`
	UTMCampaign               *string        `json:"utm_campaign"`
	UTMContent                *string        `json:"utm_content"`
	UTMMedium                 *string        `json:"utm_medium"`
	UTMSource                 *string        `json:"utm_source"`
	UTMTerm                   *string        `json:"utm_term"`
	Referrer                  *string        `json:"referrer"`
	EnabledPushMessaging      *bool          `json:"enabled_push_messaging"`
	MergeHistory              *[]any         `json:"merge_history,omitempty"`
}

type avatarJSON struct {
	Type     string `json:"type"`
	ImageURL string `json:"image_url"`
}

type listJSON struct {
	Type string `json:"type"`
	Data []any  `json:"data"`
}

// stubJSON is the "up to 10 items, follow url for more" list on a contact.
type stubJSON struct {
	Type       string `json:"type"`
	Data       []any  `json:"data"`
	URL        string `json:"url"`
	TotalCount int    `json:"total_count"`
	HasMore    bool   `json:"has_more"`
}

type locationJSON struct {
	Type          string  `json:"type"`
	Country       *string `json:"country"`
	Region        *string `json:"region"`
	City          *string `json:"city"`
	CountryCode   *string `json:"country_code"`
	ContinentCode *string `json:"continent_code"`
}

func (c *call) render(ct *Contact) contactJSON {
	return renderContact(ct, c.ver, c.query.Get("include_merge_history") == "true")
}

// renderContact shapes ct for API version ver. The contact schema's email
// and email_domain are non-nullable strings, so a contact without an email
// shows "".
func renderContact(ct *Contact, ver apiVersion, mergeHistory bool) contactJSON {
	stub := func(kind string) stubJSON {
		return stubJSON{Type: "list", Data: []any{}, URL: "/contacts/" + ct.ID + "/" + kind}
	}
	out := contactJSON{
		Type:                      "contact",
		ID:                        ct.ID,
		WorkspaceID:               ct.WorkspaceID,
		Role:                      ct.Role,
		Email:                     ct.Email,
		EmailDomain:               ct.emailDomain(),
		Phone:                     ct.Phone,
		Name:                      ct.Name,
		SocialProfiles:            listJSON{Type: "list", Data: []any{}},
		UnsubscribedFromEmails:    ct.UnsubscribedFromEmails,
		CreatedAt:                 ct.CreatedAt.Unix(),
		UpdatedAt:                 ct.UpdatedAt.Unix(),
		SignedUpAt:                ct.SignedUpAt,
		LastSeenAt:                ct.LastSeenAt,
		Location:                  locationJSON{Type: "location"},
		CustomAttributes:          maps.Clone(ct.CustomAttributes),
		Tags:                      stub("tags"),
		Notes:                     stub("notes"),
		Companies:                 stub("companies"),
		OptedOutSubscriptionTypes: stub("subscriptions"),
		OptedInSubscriptionTypes:  stub("subscriptions"),
	}
	if ct.ExternalID != "" {
		out.ExternalID = &ct.ExternalID
	}
	if ct.Avatar != nil {
		out.Avatar = &avatarJSON{Type: "avatar", ImageURL: *ct.Avatar}
	}
	if ct.OwnerID != nil {
		if ver.atLeast(2, 16) {
			out.OwnerID = *ct.OwnerID
		} else {
			// Up to 2.15 owner_id is an integer.
			n, _ := strconv.ParseInt(*ct.OwnerID, 10, 64)
			out.OwnerID = n
		}
	}
	if mergeHistory && ct.Role == "user" {
		// Merging is not modelled, so the history is always empty.
		out.MergeHistory = &[]any{}
	}
	return out
}

// adminJSON is components/schemas/admin_with_app.
type adminJSON struct {
	Type             string     `json:"type"`
	ID               string     `json:"id"`
	Name             string     `json:"name"`
	Email            string     `json:"email"`
	EmailVerified    bool       `json:"email_verified"`
	AwayModeEnabled  bool       `json:"away_mode_enabled"`
	AwayModeReassign bool       `json:"away_mode_reassign"`
	HasInboxSeat     bool       `json:"has_inbox_seat"`
	TeamIDs          []int      `json:"team_ids"`
	Avatar           adminImage `json:"avatar"`
	App              appJSON    `json:"app"`
}

type adminImage struct {
	Type     string  `json:"type"`
	ImageURL *string `json:"image_url"`
}

type appJSON struct {
	Type                 string `json:"type"`
	IDCode               string `json:"id_code"`
	Name                 string `json:"name"`
	Region               string `json:"region"`
	Timezone             string `json:"timezone"`
	CreatedAt            int64  `json:"created_at"`
	IdentityVerification bool   `json:"identity_verification"`
}

// me serves GET /me: the admin who owns the token, with the workspace
// (app) embedded. Clients call it to check a token at start-up.
func (c *call) me() *response {
	ws := c.ws
	return c.s.reply(http.StatusOK, adminJSON{
		Type:          "admin",
		ID:            ws.adminID,
		Name:          "Emulator Admin",
		Email:         "admin+" + ws.cfg.ID + "@example.com",
		EmailVerified: true,
		HasInboxSeat:  true,
		TeamIDs:       []int{},
		Avatar:        adminImage{Type: "avatar"},
		App: appJSON{
			Type:      "app",
			IDCode:    ws.cfg.ID,
			Name:      ws.cfg.ID,
			Region:    ws.cfg.Region,
			Timezone:  "Etc/UTC",
			CreatedAt: ws.created.Unix(),
		},
	})
}

// jsonNumber turns a stored custom attribute value into a float if it is a
// number.
func jsonNumber(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}
