package emulator

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Contact is a stored HubSpot contact, as returned by Server.Contacts.
type Contact struct {
	// ID is a decimal number; ids grow with creation.
	ID        string
	AccountID int64
	// Properties holds the properties that were set (never ""), without
	// the computed hs_object_id, createdate and lastmodifieddate.
	Properties map[string]string
	// CreatedAt is kept exactly, because search lag is measured from it.
	CreatedAt, UpdatedAt time.Time
}

func (c *Contact) clone() Contact {
	out := *c
	out.Properties = maps.Clone(c.Properties)
	return out
}

// account is the state behind one token. Its fields are guarded by
// Server.mu.
type account struct {
	cfg      Account
	interval time.Duration
	contacts []*Contact // creation order
	byID     map[string]*Contact
	// unique indexes contacts by the lower-cased value of each property
	// with unique values, email included.
	unique     map[string]map[string]*Contact
	props      []*property
	propByName map[string]*property

	winStart time.Time
	winCount int
	winBurst bool
	day      string
	dayCount int

	searchStart time.Time
	searchCount int
	searchBurst bool
}

func newAccount(cfg Account, created time.Time) *account {
	a := &account{
		cfg:        cfg,
		interval:   cfg.Interval,
		byID:       map[string]*Contact{},
		unique:     map[string]map[string]*Contact{},
		propByName: map[string]*property{},
	}
	if a.interval == 0 {
		a.interval = defaultInterval
	}
	for _, p := range defaultProperties() {
		p.created = created
		a.addProperty(p)
	}
	for _, n := range cfg.Properties {
		a.addProperty(&property{name: n, label: n, typ: "string", fieldType: "text", group: "contactinformation", created: created})
	}
	for _, n := range cfg.UniqueProperties {
		a.addProperty(&property{name: n, label: n, typ: "string", fieldType: "text", group: "contactinformation", unique: true, created: created})
	}
	a.cfg.Properties, a.cfg.UniqueProperties = nil, nil // now held in props
	return a
}

func (a *account) addProperty(p *property) {
	a.props = append(a.props, p)
	a.propByName[p.name] = p
	if p.unique || p.name == "email" {
		a.unique[p.name] = map[string]*Contact{}
	}
}

func (a *account) snapshot() []Contact {
	out := make([]Contact, len(a.contacts))
	for i, c := range a.contacts {
		out[i] = c.clone()
	}
	return out
}

func (a *account) index(c *Contact) {
	a.byID[c.ID] = c
	for name, idx := range a.unique {
		if v := c.Properties[name]; v != "" {
			idx[strings.ToLower(v)] = c
		}
	}
}

func (a *account) unindex(c *Contact) {
	for name, idx := range a.unique {
		if k := strings.ToLower(c.Properties[name]); k != "" && idx[k] == c {
			delete(idx, k)
		}
	}
}

func (a *account) remove(id string) bool {
	c := a.byID[id]
	if c == nil {
		return false
	}
	a.unindex(c)
	delete(a.byID, id)
	a.contacts = slices.DeleteFunc(a.contacts, func(x *Contact) bool { return x == c })
	return true
}

// clash returns the contact other than self that already holds one of the
// unique values in props, and the property.
func (a *account) clash(self *Contact, props map[string]string) (*Contact, string) {
	names := slices.Sorted(maps.Keys(a.unique))
	// Email first: its conflict is the documented one.
	slices.SortStableFunc(names, func(x, y string) int {
		switch {
		case x == "email":
			return -1
		case y == "email":
			return 1
		}
		return 0
	})
	for _, name := range names {
		v := props[name]
		if v == "" {
			continue
		}
		if o := a.unique[name][strings.ToLower(v)]; o != nil && o != self {
			return o, name
		}
	}
	return nil, ""
}

// conflict is the 409 for a clash. For email its message is the documented
// "Contact already exists. Existing ID: N"; for a custom unique property the
// answer is undocumented, and the message names no id on purpose, so that
// a client must not depend on one.
func (c *call) conflict(other *Contact, prop string) *response {
	c.rec.ContactID = other.ID
	if prop == "email" {
		return c.s.fail(http.StatusConflict, "CONFLICT", "Contact already exists. Existing ID: "+other.ID)
	}
	return c.s.fail(http.StatusConflict, "CONFLICT",
		fmt.Sprintf("A contact with the value %q for the unique property %q already exists.", other.Properties[prop], prop))
}

// contactJSON is a contact as the API renders it. Requested properties that
// are not set are null.
type contactJSON struct {
	ID         string             `json:"id"`
	Properties map[string]*string `json:"properties"`
	CreatedAt  string             `json:"createdAt"`
	UpdatedAt  string             `json:"updatedAt"`
	Archived   bool               `json:"archived"`
}

// render shows the computed properties, then names (nil: every set
// property).
func render(c *Contact, names []string) contactJSON {
	props := map[string]*string{}
	str := func(s string) *string { return &s }
	if names == nil {
		for k, v := range c.Properties {
			props[k] = str(v)
		}
	}
	for _, k := range names {
		if v, ok := c.Properties[k]; ok {
			props[k] = str(v)
		} else {
			props[k] = nil
		}
	}
	props["hs_object_id"] = str(c.ID)
	props["createdate"] = str(stamp(c.CreatedAt))
	props["lastmodifieddate"] = str(stamp(c.UpdatedAt))
	return contactJSON{ID: c.ID, Properties: props, CreatedAt: stamp(c.CreatedAt), UpdatedAt: stamp(c.UpdatedAt)}
}

// readNames is the properties a read returns: HubSpot's default three, or
// those named in properties= (comma-separated, repeatable), unknown names
// ignored.
func (c *call) readNames(requested []string) []string {
	var names []string
	for _, v := range requested {
		for n := range strings.SplitSeq(v, ",") {
			if n = strings.TrimSpace(n); n != "" && c.a.propByName[n] != nil && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return []string{"firstname", "lastname", "email"}
	}
	return names
}

func (c *call) createContact() *response {
	raw, ok := c.body["properties"]
	if !ok {
		return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: properties is required")
	}
	if as, ok := c.body["associations"]; ok && as != nil {
		if _, isList := as.([]any); !isList {
			return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: associations must be an array")
		}
	}
	props, bad := c.checkValues(raw)
	if bad != nil {
		return bad
	}
	maps.DeleteFunc(props, func(_, v string) bool { return v == "" })
	if props["email"] == "" && props["firstname"] == "" && props["lastname"] == "" {
		// Documented requirement; the wording is undocumented.
		return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "At least one of email, firstname or lastname is required.")
	}
	if other, prop := c.a.clash(nil, props); other != nil {
		return c.conflict(other, prop)
	}
	id := strconv.FormatInt(c.s.nextID, 10)
	c.s.nextID++
	ct := &Contact{ID: id, AccountID: c.a.cfg.ID, Properties: props, CreatedAt: c.now, UpdatedAt: c.now}
	c.a.contacts = append(c.a.contacts, ct)
	c.a.index(ct)
	c.rec.ContactID, c.rec.Committed = id, true
	return c.s.reply(http.StatusCreated, render(ct, nil))
}

// lookup finds the contact a path addresses: by id, or by the value of
// the unique property named by idProperty. A response is returned for a
// bad idProperty; a nil contact and response mean not found.
func (c *call) lookup(key string) (*Contact, *response) {
	idProp := ""
	if v := c.query["idProperty"]; len(v) > 0 {
		idProp = v[0]
	}
	switch p := c.a.propByName[idProp]; {
	case idProp == "" || idProp == "hs_object_id":
		return c.a.byID[key], nil
	case p == nil:
		return nil, c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("Property %q does not exist", idProp))
	case c.a.unique[idProp] == nil:
		// Undocumented wording; batch update reports "Unable to perform
		// update/upsert by non-unique 0-1 property".
		return nil, c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("Property %q is not a unique property and cannot be used as idProperty", idProp))
	default:
		return c.a.unique[idProp][strings.ToLower(key)], nil
	}
}

func (c *call) notFound(key string) *response {
	return c.s.failWith(http.StatusNotFound, errorJSON{Category: "OBJECT_NOT_FOUND",
		Message: "Object not found.  objectId are usually numeric.", Context: map[string][]string{"id": {key}}})
}

func (c *call) getContact(key string) *response {
	ct, bad := c.lookup(key)
	switch {
	case bad != nil:
		return bad
	case ct == nil:
		return c.notFound(key)
	}
	c.rec.ContactID = ct.ID
	return c.s.reply(http.StatusOK, render(ct, c.readNames(c.query["properties"])))
}

func (c *call) updateContact(key string) *response {
	ct, bad := c.lookup(key)
	if bad != nil {
		return bad
	}
	raw, ok := c.body["properties"]
	if !ok {
		return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: properties is required")
	}
	props, bad := c.checkValues(raw)
	if bad != nil {
		return bad
	}
	if ct == nil {
		return c.notFound(key)
	}
	c.rec.ContactID = ct.ID
	// Changing the email to one in use is refused with 409, as the
	// legacy API documents (undocumented for v3).
	if other, prop := c.a.clash(ct, props); other != nil {
		return c.conflict(other, prop)
	}
	c.a.unindex(ct)
	for k, v := range props {
		if v == "" {
			delete(ct.Properties, k)
		} else {
			ct.Properties[k] = v
		}
	}
	ct.UpdatedAt = c.now
	c.a.index(ct)
	c.rec.Committed = true
	return c.s.reply(http.StatusOK, render(ct, nil))
}

// Search limits: HubSpot's changelog gives 5 filter groups, 10 filters per
// group and 25 in total; pages hold at most 200.
const (
	maxFilterGroups     = 5
	maxFiltersPerGroup  = 10
	maxFiltersTotal     = 25
	maxSearchLimit      = 200
	defaultSearchLimit  = 10
	maxSearchResultsTot = 10_000
)

type filter struct {
	PropertyName string `json:"propertyName"`
	Operator     string `json:"operator"`
	Value        any    `json:"value"`
	Values       []any  `json:"values"`
	HighValue    any    `json:"highValue"`
}

type filterGroup struct {
	Filters []filter `json:"filters"`
}

// search serves POST …/contacts/search for the operators EQ, NEQ, IN,
// NOT_IN, HAS_PROPERTY and NOT_HAS_PROPERTY (the others answer 400). A
// contact becomes visible SearchLag after its creation. Comparisons ignore
// case (undocumented; emails are stored lower-cased).
func (c *call) search() *response {
	var req struct {
		FilterGroups []filterGroup `json:"filterGroups"`
		Properties   []string      `json:"properties"`
		Limit        *int          `json:"limit"`
		After        string        `json:"after"`
		Query        string        `json:"query"`
	}
	data, _ := json.Marshal(c.body)
	if err := json.Unmarshal(data, &req); err != nil {
		return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: "+err.Error())
	}
	var problems []string
	total := 0
	for _, g := range req.FilterGroups {
		total += len(g.Filters)
		if len(g.Filters) > maxFiltersPerGroup {
			problems = append(problems, fmt.Sprintf("a filter group has %d filters, more than %d", len(g.Filters), maxFiltersPerGroup))
		}
		for _, f := range g.Filters {
			switch {
			case c.a.propByName[f.PropertyName] == nil:
				problems = append(problems, fmt.Sprintf("property %q does not exist", f.PropertyName))
			case !slices.Contains([]string{"EQ", "NEQ", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}, f.Operator):
				problems = append(problems, fmt.Sprintf("operator %q is not supported by the emulator", f.Operator))
			}
		}
	}
	if len(req.FilterGroups) > maxFilterGroups {
		problems = append(problems, fmt.Sprintf("%d filter groups, more than %d", len(req.FilterGroups), maxFilterGroups))
	}
	if total > maxFiltersTotal {
		problems = append(problems, fmt.Sprintf("%d filters, more than %d", total, maxFiltersTotal))
	}
	if req.Query != "" {
		problems = append(problems, "query is not supported by the emulator")
	}
	limit := defaultSearchLimit
	if req.Limit != nil {
		limit = *req.Limit
		if limit < 1 || limit > maxSearchLimit {
			problems = append(problems, fmt.Sprintf("limit %d is not between 1 and %d", limit, maxSearchLimit))
		}
	}
	offset := 0
	if req.After != "" {
		n, err := strconv.Atoi(req.After)
		if err != nil || n < 0 {
			problems = append(problems, fmt.Sprintf("after %q is not a valid cursor", req.After))
		}
		offset = n
	}
	if len(problems) > 0 {
		return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid search request: "+strings.Join(problems, "; "))
	}
	var hits []*Contact
	for _, ct := range c.a.contacts {
		if c.now.Before(ct.CreatedAt.Add(c.s.lag)) {
			continue
		}
		if len(req.FilterGroups) == 0 || slices.ContainsFunc(req.FilterGroups, func(g filterGroup) bool {
			return !slices.ContainsFunc(g.Filters, func(f filter) bool { return !f.matches(ct) })
		}) {
			hits = append(hits, ct)
		}
	}
	hits = hits[:min(len(hits), maxSearchResultsTot)]
	page := hits[min(offset, len(hits)):]
	page = page[:min(limit, len(page))]
	names := c.readNames([]string{strings.Join(req.Properties, ",")})
	results := make([]contactJSON, 0, len(page))
	for _, ct := range page {
		results = append(results, render(ct, names))
	}
	out := map[string]any{"total": len(hits), "results": results}
	if next := offset + len(page); next < len(hits) {
		out["paging"] = map[string]any{"next": map[string]string{"after": strconv.Itoa(next)}}
	}
	return c.s.reply(http.StatusOK, out)
}

func (f filter) matches(ct *Contact) bool {
	v, has := ct.Properties[f.PropertyName]
	switch f.PropertyName {
	case "hs_object_id":
		v, has = ct.ID, true
	}
	text := func(x any) string {
		switch y := x.(type) {
		case string:
			return y
		case nil:
			return ""
		}
		return fmt.Sprint(x)
	}
	in := func() bool {
		return slices.ContainsFunc(f.Values, func(x any) bool { return strings.EqualFold(text(x), v) })
	}
	switch f.Operator {
	case "EQ":
		return has && strings.EqualFold(v, text(f.Value))
	case "NEQ":
		return !strings.EqualFold(v, text(f.Value))
	case "IN":
		return has && in()
	case "NOT_IN":
		return !in()
	case "HAS_PROPERTY":
		return has
	case "NOT_HAS_PROPERTY":
		return !has
	}
	return false
}
