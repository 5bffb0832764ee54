package intercom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

const (
	// searchPageSize is the largest page Intercom documents for contact
	// lists; bigger pages mean fewer requests against the rate limit.
	searchPageSize = 150
	// maxSearchPages bounds one lookup. More than 1,500 contacts sharing
	// one email is not a real person; stopping keeps a pathological
	// workspace from eating the whole rate-limit budget.
	maxSearchPages = 10
)

// Find returns the contacts matching the identity: the user with the
// external id (GET /contacts/find_by_external_id, which is immediately
// consistent but knows users only; a search on external_id before API 2.13),
// then every contact, lead or user, whose email matches, then those whose
// marker attribute holds id.Marker (both by POST /contacts/search, which can
// lag a few minutes behind creates). Results are merged by id. An identity
// with nothing to search by is a Permanent error, because an empty answer
// would invite a blind create.
func (c *Client) Find(ctx context.Context, id domain.Identity) ([]domain.Match, error) {
	marker := ""
	if c.cfg.MarkerAttribute != "" {
		marker = id.Marker
	}
	if id.Email == "" && id.ExternalID == "" && marker == "" {
		return nil, c.fail(&ports.Error{Op: OpSearch, Kind: ports.Permanent, Message: "identity has neither email nor external id"})
	}
	var out []domain.Match
	seen := map[string]bool{}
	add := func(cs []contactJSON) {
		for _, ct := range cs {
			if ct.ID == "" || seen[string(ct.ID)] {
				continue
			}
			seen[string(ct.ID)] = true
			out = append(out, ct.match(c.cfg.MarkerAttribute))
		}
	}
	if id.ExternalID != "" {
		var cs []contactJSON
		var err error
		if c.minor >= findByExternalIDMinor {
			cs, err = c.findByExternalID(ctx, id.ExternalID)
		} else {
			cs, err = c.search(ctx, "external_id", id.ExternalID)
		}
		if err != nil {
			return nil, c.fail(err)
		}
		add(cs)
	}
	if id.Email != "" {
		cs, err := c.search(ctx, "email", id.Email)
		if err != nil {
			return nil, c.fail(err)
		}
		add(cs)
	}
	if marker != "" {
		cs, err := c.search(ctx, "custom_attributes."+c.cfg.MarkerAttribute, marker)
		if err != nil {
			return nil, c.fail(err)
		}
		add(cs)
	}
	return out, nil
}

// findByExternalID looks a user up by external id. 404 means none; 410 means
// the user was merged, and the canonical contact named by the Link header is
// fetched instead, because that is the person now.
func (c *Client) findByExternalID(ctx context.Context, xid string) ([]contactJSON, error) {
	res, err := c.send(ctx, call{op: OpFindByExternalID, method: http.MethodGet,
		path: "/contacts/find_by_external_id/" + url.PathEscape(xid), policy: repeatable})
	if err != nil {
		return nil, err
	}
	switch res.status {
	case http.StatusOK:
		ct, err := decodeContact(OpFindByExternalID, res)
		if err != nil {
			return nil, err
		}
		return []contactJSON{ct}, nil
	case http.StatusNotFound:
		return nil, nil
	case http.StatusGone:
		canonical, ok := canonicalID(res.header)
		if !ok {
			return nil, nil
		}
		ct, found, err := c.get(ctx, canonical)
		if err != nil || !found {
			return nil, err
		}
		return []contactJSON{ct}, nil
	}
	return nil, c.statusError(OpFindByExternalID, res)
}

// get fetches one contact; found is false on 404 and 410.
func (c *Client) get(ctx context.Context, id string) (contactJSON, bool, error) {
	res, err := c.send(ctx, call{op: OpGet, method: http.MethodGet, path: "/contacts/" + url.PathEscape(id), policy: repeatable})
	if err != nil {
		return contactJSON{}, false, err
	}
	switch res.status {
	case http.StatusOK:
		ct, err := decodeContact(OpGet, res)
		return ct, err == nil, err
	case http.StatusNotFound, http.StatusGone:
		return contactJSON{}, false, nil
	}
	return contactJSON{}, false, c.statusError(OpGet, res)
}

var linkCanonical = regexp.MustCompile(`<[^>]*/contacts/([^/>?#\s]+)>\s*;\s*rel="?canonical"?`)

// canonicalID reads `Link: </contacts/{id}>; rel="canonical"`.
func canonicalID(h http.Header) (string, bool) {
	for _, v := range h.Values("Link") {
		if m := linkCanonical.FindStringSubmatch(v); m != nil {
			if id, err := url.PathUnescape(m[1]); err == nil && id != "" {
				return id, true
			}
		}
	}
	return "", false
}

type searchRequest struct {
	Query      searchFilter `json:"query"`
	Pagination searchPaging `json:"pagination"`
}

type searchFilter struct {
	Field    string `json:"field"`
	Operator string `json:"operator"`
	Value    string `json:"value"`
}

type searchPaging struct {
	PerPage       int    `json:"per_page"`
	StartingAfter string `json:"starting_after,omitempty"`
}

// search finds every contact whose field equals value, following cursors.
func (c *Client) search(ctx context.Context, field, value string) ([]contactJSON, error) {
	var out []contactJSON
	req := searchRequest{
		Query:      searchFilter{Field: field, Operator: "=", Value: value},
		Pagination: searchPaging{PerPage: searchPageSize},
	}
	cursors := map[string]bool{}
	for range maxSearchPages {
		body, err := json.Marshal(req)
		if err != nil {
			return nil, &ports.Error{Op: OpSearch, Kind: ports.Permanent, Err: err}
		}
		res, err := c.send(ctx, call{op: OpSearch, method: http.MethodPost, path: "/contacts/search", body: body, policy: repeatable})
		if err != nil {
			return nil, err
		}
		if res.status != http.StatusOK {
			return nil, c.statusError(OpSearch, res)
		}
		var page struct {
			Data  []contactJSON `json:"data"`
			Pages *struct {
				Next json.RawMessage `json:"next"`
			} `json:"pages"`
		}
		if err := json.Unmarshal(res.body, &page); err != nil {
			return nil, &ports.Error{Op: OpSearch, Kind: ports.Transient, Status: res.status, Err: fmt.Errorf("decode search response: %w", err)}
		}
		out = append(out, page.Data...)
		next := ""
		if page.Pages != nil {
			next = nextCursor(page.Pages.Next)
		}
		if next == "" || cursors[next] {
			return out, nil
		}
		cursors[next] = true
		req.Pagination.StartingAfter = next
	}
	return out, nil
}

// nextCursor reads pages.next, which is {"starting_after": "..."} in the
// versions this adapter supports; anything else ends the pagination.
func nextCursor(raw json.RawMessage) string {
	var next struct {
		StartingAfter string `json:"starting_after"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &next) != nil {
		return ""
	}
	return next.StartingAfter
}

// contactJSON is the part of Intercom's contact object the adapter reads.
type contactJSON struct {
	ID         flexString `json:"id"`
	Role       string     `json:"role"`
	Email      string     `json:"email"`
	ExternalID flexString `json:"external_id"`
	CreatedAt  flexInt    `json:"created_at"`
	// Custom keeps the raw values: only the marker is read, and a value
	// of an unexpected type must not fail the whole decode.
	Custom map[string]json.RawMessage `json:"custom_attributes"`
}

func (ct contactJSON) match(markerAttr string) domain.Match {
	m := domain.Match{
		ID:         string(ct.ID),
		Role:       domain.Role(ct.Role),
		Email:      ct.Email,
		ExternalID: string(ct.ExternalID),
		CreatedAt:  int64(ct.CreatedAt),
	}
	if raw, ok := ct.Custom[markerAttr]; ok && markerAttr != "" {
		var v flexString
		if json.Unmarshal(raw, &v) == nil {
			m.Marker = string(v)
		}
	}
	return m
}

func decodeContact(op string, res response) (contactJSON, error) {
	var ct contactJSON
	if err := json.Unmarshal(res.body, &ct); err != nil {
		return ct, &ports.Error{Op: op, Kind: ports.Transient, Status: res.status, Err: fmt.Errorf("decode contact: %w", err)}
	}
	if ct.ID == "" {
		return ct, &ports.Error{Op: op, Kind: ports.Transient, Status: res.status, Err: errors.New("contact in response has no id")}
	}
	return ct, nil
}

// flexString accepts a JSON string, number or null, because ids and
// owner ids changed type between API versions.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*f = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*f = flexString(n.String())
	}
	return nil
}

// flexInt accepts a JSON number (integer or float), a numeric string, or
// null.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case nil:
		*f = 0
	case float64:
		*f = flexInt(x)
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return fmt.Errorf("timestamp %q is not an integer", x)
		}
		*f = flexInt(n)
	default:
		return fmt.Errorf("unexpected timestamp %s", b)
	}
	return nil
}

// contactBody is the request body of POST /contacts and PUT /contacts/{id}.
// Every field is omitted when unset, so an update never blanks a field the
// campaign does not map.
type contactBody struct {
	Role         string         `json:"role,omitempty"`
	ExternalID   string         `json:"external_id,omitempty"`
	Email        string         `json:"email,omitempty"`
	Phone        string         `json:"phone,omitempty"`
	Name         string         `json:"name,omitempty"`
	Avatar       string         `json:"avatar,omitempty"`
	SignedUpAt   int64          `json:"signed_up_at,omitempty"`
	LastSeenAt   int64          `json:"last_seen_at,omitempty"`
	OwnerID      any            `json:"owner_id,omitempty"` // string from 2.16, integer before
	Unsubscribed *bool          `json:"unsubscribed_from_emails,omitempty"`
	Custom       map[string]any `json:"custom_attributes,omitempty"`
}

func (b contactBody) empty() bool {
	return b.Role == "" && b.ExternalID == "" && b.Email == "" && b.Phone == "" && b.Name == "" &&
		b.Avatar == "" && b.SignedUpAt == 0 && b.LastSeenAt == 0 && b.OwnerID == nil &&
		b.Unsubscribed == nil && len(b.Custom) == 0
}

// body converts a contact for the pinned API version. An owner id that the
// version cannot carry (a non-integer before 2.16) is a Permanent error:
// Intercom would reject it, and every retry would too.
func (c *Client) body(op string, ct domain.Contact) (contactBody, error) {
	b := contactBody{
		Role:         string(ct.Role),
		ExternalID:   ct.ExternalID,
		Email:        ct.Email,
		Phone:        ct.Phone,
		Name:         ct.Name,
		Avatar:       ct.Avatar,
		SignedUpAt:   ct.SignedUpAt,
		LastSeenAt:   ct.LastSeenAt,
		Unsubscribed: ct.Unsubscribed,
		Custom:       ct.Custom,
	}
	if ct.OwnerID != "" {
		if c.minor >= stringOwnerIDMinor {
			b.OwnerID = ct.OwnerID
		} else {
			n, err := strconv.ParseInt(strings.TrimSpace(ct.OwnerID), 10, 64)
			if err != nil {
				return b, &ports.Error{Op: op, Kind: ports.Permanent,
					Message: fmt.Sprintf("owner_id %q must be an integer admin id for API version %s", ct.OwnerID, c.cfg.APIVersion)}
			}
			b.OwnerID = n
		}
	}
	return b, nil
}

func marshalBody(op string, b any) ([]byte, error) {
	data, err := json.Marshal(b)
	if err != nil {
		// NaN or an unsupported custom attribute value: no retry fixes it.
		return nil, &ports.Error{Op: op, Kind: ports.Permanent, Err: fmt.Errorf("encode request: %w", err)}
	}
	return data, nil
}

// Create creates a lead or user with POST /contacts, storing ct.Marker in
// the marker attribute when one is configured. When Intercom answers
// 409 because a matching contact exists (a user with the same external id
// or email, possibly archived), the existing contact's id is returned with
// Existing set: for exactly-once delivery, "already there" is success.
//
// A create is not idempotent (Intercom has no idempotency key, and leads
// may share an email), so it is sent again only when it certainly was not
// applied: after a 429 or a failed dial. A failure after the request may
// have reached Intercom (timeout, reset, 5xx) is returned as Transient with
// Uncertain set, and the application must look the contact up before
// trying again.
func (c *Client) Create(ctx context.Context, ct domain.Contact) (ports.Created, error) {
	if ct.Role != domain.RoleLead && ct.Role != domain.RoleUser {
		// Intercom documents no default role, so guessing one could create
		// the wrong kind of contact.
		return ports.Created{}, c.fail(&ports.Error{Op: OpCreate, Kind: ports.Permanent,
			Message: fmt.Sprintf("role must be %q or %q, got %q", domain.RoleLead, domain.RoleUser, ct.Role)})
	}
	b, err := c.body(OpCreate, ct)
	if err != nil {
		return ports.Created{}, c.fail(err)
	}
	if ct.Marker != "" && c.cfg.MarkerAttribute != "" {
		// A copy: the caller's map is not ours to change.
		custom := make(map[string]any, len(b.Custom)+1)
		maps.Copy(custom, b.Custom)
		custom[c.cfg.MarkerAttribute] = ct.Marker
		b.Custom = custom
	}
	data, err := marshalBody(OpCreate, b)
	if err != nil {
		return ports.Created{}, c.fail(err)
	}
	res, err := c.send(ctx, call{op: OpCreate, method: http.MethodPost, path: "/contacts", body: data, policy: unsentOnly})
	if err != nil {
		return ports.Created{}, c.fail(err)
	}
	switch res.status {
	case http.StatusOK, http.StatusCreated:
		created, err := decodeContact(OpCreate, res)
		if err != nil {
			// Intercom said yes but the answer is unreadable: the contact
			// exists, its id is unknown, so reconcile by lookup.
			var pe *ports.Error
			if errors.As(err, &pe) {
				pe.Uncertain = true
			}
			return ports.Created{}, c.fail(err)
		}
		return ports.Created{ID: string(created.ID)}, nil
	case http.StatusConflict:
		env := parseErrorBody(res.header, res.body, c.scrub)
		if id, _, ok := conflictID(env.items); ok {
			return ports.Created{ID: id, Existing: true}, nil
		}
		pe := c.statusError(OpCreate, res)
		pe.Kind = ports.Permanent
		if pe.Err == nil {
			pe.Err = errors.New("conflict without an existing contact id")
		}
		return ports.Created{}, c.fail(pe)
	}
	return ports.Created{}, c.fail(c.statusError(OpCreate, res))
}

// Update writes the set fields of ct onto contact id with PUT
// /contacts/{id}. The role is never sent, whatever ct says: an update must
// not turn a lead into a user behind the campaign's back. Nor is the marker:
// it names the event that created the contact, and an update is not that. A
// contact with no set field sends nothing. 404 and 410 (merged away) are NotFound, so the
// application can look the person up again.
func (c *Client) Update(ctx context.Context, id string, ct domain.Contact) error {
	if strings.TrimSpace(id) == "" {
		return c.fail(&ports.Error{Op: OpUpdate, Kind: ports.Permanent, Message: "contact id is empty"})
	}
	b, err := c.body(OpUpdate, ct.ForUpdate())
	if err != nil {
		return c.fail(err)
	}
	b.Role = "" // defensive: ForUpdate already clears it
	if b.empty() {
		return nil
	}
	data, err := marshalBody(OpUpdate, b)
	if err != nil {
		return c.fail(err)
	}
	res, err := c.send(ctx, call{op: OpUpdate, method: http.MethodPut, path: "/contacts/" + url.PathEscape(id), body: data, policy: repeatable})
	if err != nil {
		return c.fail(err)
	}
	if res.status == http.StatusOK {
		return nil
	}
	return c.fail(c.statusError(OpUpdate, res))
}
