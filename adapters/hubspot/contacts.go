package hubspot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// HubSpot-defined contact properties the adapter writes from fields of
// domain.Contact.
const (
	propEmail          = "email"
	propFirstName      = "firstname"
	propLastName       = "lastname"
	propPhone          = "phone"
	propOwner          = "hubspot_owner_id"
	propLifecycleStage = "lifecyclestage"
	propCreateDate     = "createdate"
)

const (
	// searchPageSize is the largest search page HubSpot serves.
	searchPageSize = 200
	// maxSearchPages bounds a marker search; a marker is on one contact.
	maxSearchPages = 3
)

// Find returns the contacts matching the identity. HubSpot keeps one
// contact per email, so the email is looked up directly with
// GET …/contacts/{email}?idProperty=email, which needs no search and so
// has no search lag; the external id likewise by its unique property, when
// ExternalIDProperty is configured (HubSpot has no external id of its
// own: without the property a contact is matched by email only). The
// marker is returned on each match. Only an identity with neither email
// nor a usable external id searches for the marker (POST …/search, whose
// index lags behind creates). An identity with nothing to look up by is
// Permanent, because an empty answer would invite a blind create.
func (c *Client) Find(ctx context.Context, id domain.Identity) ([]domain.Match, error) {
	xid := ""
	if c.cfg.ExternalIDProperty != "" {
		xid = id.ExternalID
	}
	if id.Email == "" && xid == "" && id.Marker == "" {
		msg := "identity has neither email nor external id"
		if id.ExternalID != "" {
			msg = "identity has only an external id, and no ExternalIDProperty is configured to find it by"
		}
		return nil, c.fail(&ports.Error{Op: OpGetByEmail, Kind: ports.Permanent, Message: msg})
	}
	var out []domain.Match
	add := func(ct contactJSON) {
		for _, m := range out {
			if m.ID == ct.ID {
				return
			}
		}
		out = append(out, c.match(ct))
	}
	if xid != "" {
		ct, found, err := c.get(ctx, OpGetByExternalID, xid, c.cfg.ExternalIDProperty)
		if err != nil {
			return nil, c.fail(err)
		}
		if found {
			add(ct)
		}
	}
	if id.Email != "" {
		ct, found, err := c.get(ctx, OpGetByEmail, id.Email, propEmail)
		if err != nil {
			return nil, c.fail(err)
		}
		if found {
			add(ct)
		}
	}
	if id.Email == "" && xid == "" {
		cts, err := c.searchEQ(ctx, c.cfg.MarkerProperty, id.Marker)
		if err != nil {
			return nil, c.fail(err)
		}
		for _, ct := range cts {
			add(ct)
		}
	}
	return out, nil
}

// readProperties are the properties a lookup asks for: what a Match
// carries.
func (c *Client) readProperties() []string {
	p := []string{propEmail, propLifecycleStage, propCreateDate, c.cfg.MarkerProperty}
	if c.cfg.ExternalIDProperty != "" {
		p = append(p, c.cfg.ExternalIDProperty)
	}
	return p
}

// get reads one contact by id (idProperty "") or by a unique property;
// found is false on 404.
func (c *Client) get(ctx context.Context, op, key, idProperty string) (contactJSON, bool, error) {
	q := url.Values{"properties": {strings.Join(c.readProperties(), ",")}}
	if idProperty != "" {
		q.Set("idProperty", idProperty)
	}
	// Only the key is escaped into the path; the query stays separate
	// (a client that escaped both got 404s).
	path := c.cfg.objectsPath() + "/" + url.PathEscape(key) + "?" + q.Encode()
	res, err := c.send(ctx, call{op: op, method: http.MethodGet, path: path, policy: repeatable})
	if err != nil {
		return contactJSON{}, false, err
	}
	switch res.status {
	case http.StatusOK:
		ct, err := decodeContact(op, res)
		return ct, err == nil, err
	case http.StatusNotFound:
		return contactJSON{}, false, nil
	}
	pe := c.statusError(op, res)
	if pe.Kind == ports.NotFound {
		pe.Kind = ports.Permanent // 410 and the like: not a "none" answer
	}
	return contactJSON{}, false, pe
}

type searchFilter struct {
	PropertyName string `json:"propertyName"`
	Operator     string `json:"operator"`
	Value        string `json:"value"`
}

type searchRequest struct {
	FilterGroups []struct {
		Filters []searchFilter `json:"filters"`
	} `json:"filterGroups"`
	Properties []string `json:"properties"`
	Limit      int      `json:"limit"`
	After      string   `json:"after,omitempty"`
}

// searchEQ finds the contacts whose property equals value, following
// cursors. It counts against the search limit, not the interval budget.
func (c *Client) searchEQ(ctx context.Context, property, value string) ([]contactJSON, error) {
	req := searchRequest{Properties: c.readProperties(), Limit: searchPageSize}
	req.FilterGroups = append(req.FilterGroups, struct {
		Filters []searchFilter `json:"filters"`
	}{[]searchFilter{{PropertyName: property, Operator: "EQ", Value: value}}})
	var out []contactJSON
	for range maxSearchPages {
		body, err := json.Marshal(req)
		if err != nil {
			return nil, &ports.Error{Op: OpSearch, Kind: ports.Permanent, Err: err}
		}
		res, err := c.send(ctx, call{op: OpSearch, method: http.MethodPost, path: c.cfg.objectsPath() + "/search", body: body, policy: repeatable, search: true})
		if err != nil {
			return nil, err
		}
		if res.status != http.StatusOK {
			return nil, c.statusError(OpSearch, res)
		}
		var page struct {
			Results []contactJSON `json:"results"`
			Paging  *struct {
				Next *struct {
					After string `json:"after"`
				} `json:"next"`
			} `json:"paging"`
		}
		if err := json.Unmarshal(res.body, &page); err != nil {
			return nil, &ports.Error{Op: OpSearch, Kind: ports.Transient, Status: res.status, Err: fmt.Errorf("decode search response: %w", err)}
		}
		out = append(out, page.Results...)
		if page.Paging == nil || page.Paging.Next == nil || page.Paging.Next.After == "" || page.Paging.Next.After == req.After {
			return out, nil
		}
		req.After = page.Paging.Next.After
	}
	return out, nil
}

// contactJSON is the part of HubSpot's contact object the adapter reads.
// Property values are strings or null.
type contactJSON struct {
	ID         string             `json:"id"`
	Properties map[string]*string `json:"properties"`
	CreatedAt  string             `json:"createdAt"`
}

func (ct contactJSON) prop(name string) string {
	if v := ct.Properties[name]; v != nil {
		return *v
	}
	return ""
}

// match converts a contact. Its role is user when its lifecycle stage is
// the configured UserStage, lead otherwise: HubSpot has one kind of
// contact, told apart only by the stage.
func (c *Client) match(ct contactJSON) domain.Match {
	m := domain.Match{
		ID:     ct.ID,
		Role:   domain.RoleLead,
		Email:  ct.prop(propEmail),
		Marker: ct.prop(c.cfg.MarkerProperty),
	}
	if ct.prop(propLifecycleStage) == c.cfg.UserStage {
		m.Role = domain.RoleUser
	}
	if c.cfg.ExternalIDProperty != "" {
		m.ExternalID = ct.prop(c.cfg.ExternalIDProperty)
	}
	created := ct.CreatedAt
	if created == "" {
		created = ct.prop(propCreateDate)
	}
	if t, err := time.Parse(time.RFC3339Nano, created); err == nil {
		m.CreatedAt = t.Unix()
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

// contactProperties converts a contact's fields to HubSpot properties:
// email, phone and hubspot_owner_id directly; the name split at its last
// space into firstname and lastname (a single word is the first name);
// the external id into ExternalIDProperty; every custom value into the
// property of the same name, as text. Fields HubSpot has no contact
// property for (avatar, signed-up and last-seen times, unsubscribed) and
// properties the adapter sets itself are Permanent errors: every retry
// would fail the same way. Empty fields are left out, so an update never
// blanks a property the campaign does not map.
func (c *Client) contactProperties(op string, ct domain.Contact) (map[string]string, error) {
	props := map[string]string{}
	var problems []string
	set := func(name, v string) {
		if v == "" {
			return
		}
		if _, dup := props[name]; dup {
			problems = append(problems, fmt.Sprintf("property %q is mapped twice", name))
			return
		}
		props[name] = v
	}
	set(propEmail, ct.Email)
	set(propPhone, ct.Phone)
	set(propOwner, ct.OwnerID)
	if name := strings.TrimSpace(ct.Name); name != "" {
		if i := strings.LastIndexByte(name, ' '); i > 0 {
			set(propFirstName, strings.TrimSpace(name[:i]))
			set(propLastName, strings.TrimSpace(name[i+1:]))
		} else {
			set(propFirstName, name)
		}
	}
	if ct.ExternalID != "" {
		if c.cfg.ExternalIDProperty == "" {
			problems = append(problems, "an external id is mapped but no ExternalIDProperty is configured (HubSpot has no external id of its own)")
		} else {
			set(c.cfg.ExternalIDProperty, ct.ExternalID)
		}
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"avatar", ct.Avatar != ""}, {"signed_up_at", ct.SignedUpAt != 0}, {"last_seen_at", ct.LastSeenAt != 0}, {"unsubscribed_from_emails", ct.Unsubscribed != nil}} {
		if f.set {
			problems = append(problems, fmt.Sprintf("%s has no HubSpot contact property; map it to a custom property", f.name))
		}
	}
	for name, v := range ct.Custom {
		if name == propLifecycleStage || name == c.cfg.MarkerProperty {
			problems = append(problems, fmt.Sprintf("property %q is set by the adapter and cannot be mapped", name))
			continue
		}
		s, err := propertyValue(v, c.propertyType(name))
		if err != nil {
			problems = append(problems, fmt.Sprintf("property %q: %v", name, err))
			continue
		}
		set(name, s)
	}
	if len(problems) > 0 {
		return nil, &ports.Error{Op: op, Kind: ports.Permanent, Message: strings.Join(problems, "; ")}
	}
	return props, nil
}

// propertyValue formats a mapped value as HubSpot property text for a
// property of type typ ("" when unknown): numbers without grouping (HubSpot
// refuses commas), booleans as true/false. Times (a time.Time, or the Unix
// seconds the domain turns times into) written to a datetime property
// become epoch milliseconds, and to a date property midnight UTC of their
// day in milliseconds, which is what HubSpot stores.
func propertyValue(v any, typ string) (string, error) {
	if typ == "datetime" || typ == "date" {
		var t time.Time
		switch x := v.(type) {
		case time.Time:
			t = x
		case int64:
			t = time.Unix(x, 0)
		case int:
			t = time.Unix(int64(x), 0)
		}
		if !t.IsZero() {
			if typ == "date" {
				y, m, d := t.UTC().Date()
				t = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
			}
			return strconv.FormatInt(t.UnixMilli(), 10), nil
		}
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("%v is not a number HubSpot can store", x)
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("values of type %T are not supported", v)
}

// propertyType is the type of a property as last listed (by
// CheckProperties, EnsureMarker or Properties), "" when unknown.
func (c *Client) propertyType(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.types[name]
}

type propertiesBody struct {
	Properties map[string]string `json:"properties"`
}

// stage is the lifecycle stage a create sets for the role.
func (c *Client) stage(r domain.Role) (string, bool) {
	switch r {
	case domain.RoleLead:
		return c.cfg.LeadStage, true
	case domain.RoleUser:
		return c.cfg.UserStage, true
	}
	return "", false
}

// Create creates a contact with POST …/contacts, setting lifecyclestage to
// LeadStage or UserStage by the role and the marker property to ct.Marker.
// When HubSpot answers 409 because the email (or the unique external id)
// is taken, the existing contact's id is returned with Existing set: for
// exactly-once delivery, "already there" is success. The id is parsed from
// the message, "Contact already exists. Existing ID: N"; should that fail,
// the contact is looked up by email and external id instead. A contact
// that carries ct.Marker is this create's own, applied by an earlier
// attempt whose answer was lost: Existing is then false.
//
// A create is sent again only when it certainly was not applied (429,
// 423, a failed dial). Any other failure after sending (timeout, reset,
// 5xx) is Transient with Uncertain set; the application then looks the
// contact up, which for HubSpot is consistent by email.
func (c *Client) Create(ctx context.Context, ct domain.Contact) (ports.Created, error) {
	stage, ok := c.stage(ct.Role)
	if !ok {
		return ports.Created{}, c.fail(&ports.Error{Op: OpCreate, Kind: ports.Permanent,
			Message: fmt.Sprintf("role must be %q or %q, got %q", domain.RoleLead, domain.RoleUser, ct.Role)})
	}
	props, err := c.contactProperties(OpCreate, ct)
	if err != nil {
		return ports.Created{}, c.fail(err)
	}
	props[propLifecycleStage] = stage
	if ct.Marker != "" {
		props[c.cfg.MarkerProperty] = ct.Marker
	}
	data, err := json.Marshal(propertiesBody{Properties: props})
	if err != nil {
		return ports.Created{}, c.fail(&ports.Error{Op: OpCreate, Kind: ports.Permanent, Err: err})
	}
	res, err := c.send(ctx, call{op: OpCreate, method: http.MethodPost, path: c.cfg.objectsPath(), body: data, policy: unsentOnly})
	if err != nil {
		return ports.Created{}, c.fail(err)
	}
	switch res.status {
	case http.StatusCreated, http.StatusOK:
		created, err := decodeContact(OpCreate, res)
		if err != nil {
			// HubSpot said yes but the answer is unreadable: the contact
			// exists, its id is unknown, so reconcile by lookup.
			var pe *ports.Error
			if errors.As(err, &pe) {
				pe.Uncertain = true
			}
			return ports.Created{}, c.fail(err)
		}
		return ports.Created{ID: created.ID}, nil
	case http.StatusConflict:
		if id, ok := conflictID(parseErrorBody(res.header, res.body, c.scrub)); ok {
			return ports.Created{ID: id, Existing: !c.ownCreate(ctx, id, ct.Marker)}, nil
		}
		return c.resolveConflict(ctx, ct, c.statusError(OpCreate, res))
	}
	return ports.Created{}, c.fail(c.statusError(OpCreate, res))
}

// ownCreate reports whether contact id carries marker: then the 409 answers
// a repeat of this very create, whose first answer was lost, and the
// contact is the caller's own, not one that existed before. A 409 is rare
// (the application looks the email up first), so the extra read is cheap;
// when it fails, the contact counts as existing, which is never wrong
// about duplicates.
func (c *Client) ownCreate(ctx context.Context, id, marker string) bool {
	if marker == "" {
		return false
	}
	ct, found, err := c.get(ctx, OpGetByID, id, "")
	return err == nil && found && ct.prop(c.cfg.MarkerProperty) == marker
}

// resolveConflict finds the contact a 409 without a readable id refers to,
// by the unique keys the create carried.
func (c *Client) resolveConflict(ctx context.Context, ct domain.Contact, refusal *ports.Error) (ports.Created, error) {
	matches, err := c.Find(ctx, domain.Identity{Email: ct.Email, ExternalID: ct.ExternalID})
	if err != nil {
		return ports.Created{}, err // already wrapped; unknown is not permanent
	}
	if len(matches) > 0 {
		m, _, _ := domain.PickMatch(domain.IdentityOf(ct), matches)
		return ports.Created{ID: m.ID, Existing: ct.Marker == "" || m.Marker != ct.Marker}, nil
	}
	refusal.Kind = ports.Permanent
	if refusal.Err == nil {
		refusal.Err = errors.New("conflict without an existing contact id, and no contact found by email or external id")
	}
	return ports.Created{}, c.fail(refusal)
}

// Update writes the set fields of ct onto contact id with PATCH
// …/contacts/{id}. It never sends lifecyclestage, whatever ct says: an
// update must not change the contact's kind (and HubSpot means stages to
// move only forward). Nor the marker: it names the event that created the
// contact. A contact with no set field sends nothing. 404 is NotFound (the
// contact was deleted or merged away), so the application looks the person
// up again.
func (c *Client) Update(ctx context.Context, id string, ct domain.Contact) error {
	if strings.TrimSpace(id) == "" {
		return c.fail(&ports.Error{Op: OpUpdate, Kind: ports.Permanent, Message: "contact id is empty"})
	}
	props, err := c.contactProperties(OpUpdate, ct.ForUpdate())
	if err != nil {
		return c.fail(err)
	}
	delete(props, propLifecycleStage) // defensive: contactProperties refuses it already
	delete(props, c.cfg.MarkerProperty)
	if len(props) == 0 {
		return nil
	}
	data, err := json.Marshal(propertiesBody{Properties: props})
	if err != nil {
		return c.fail(&ports.Error{Op: OpUpdate, Kind: ports.Permanent, Err: err})
	}
	res, err := c.send(ctx, call{op: OpUpdate, method: http.MethodPatch, path: c.cfg.objectsPath() + "/" + url.PathEscape(id), body: data, policy: repeatable})
	if err != nil {
		return c.fail(err)
	}
	if res.status == http.StatusOK {
		return nil
	}
	return c.fail(c.statusError(OpUpdate, res))
}
