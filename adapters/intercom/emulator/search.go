package emulator

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Search limits, from the SearchContacts description and the pagination
// docs (which state the 150 maximum for listing contacts; search is assumed
// to share it).
const (
	defaultPerPage = 50
	maxPerPage     = 150
	maxGroup       = 15 // filters per AND/OR group
	maxDepth       = 2  // nested AND/OR levels
)

// kind is a searchable field's type, which decides its operators.
type kind int

const (
	kindString kind = iota
	kindNumber
	kindBool
	kindDate
)

var operatorsFor = map[kind][]string{
	kindString: {"=", "!=", "IN", "NIN", "~", "!~", "^", "$"},
	kindNumber: {"=", "!=", "IN", "NIN", "<", "<=", ">", ">="},
	kindBool:   {"=", "!=", "IN", "NIN"},
	// Date fields are matched by calendar day and accept only these.
	kindDate: {"=", "<", ">"},
}

// standardFields are the contact fields the emulator can search and sort
// on; custom_attributes.<name> are added per workspace.
var standardFields = map[string]kind{
	"id": kindString, "role": kindString, "name": kindString, "email": kindString,
	"email_domain": kindString, "phone": kindString, "external_id": kindString,
	"owner_id": kindString, "created_at": kindDate, "updated_at": kindDate,
	"signed_up_at": kindDate, "last_seen_at": kindDate, "unsubscribed_from_emails": kindBool,
}

// foldedFields compare without regard to case. The docs do not say; emails
// are case-insensitive everywhere else in Intercom, so search treats them
// (and their domain) the same, and every other string exactly.
var foldedFields = map[string]bool{"email": true, "email_domain": true}

// filter is a parsed query node: a group (op AND/OR with children) or a
// single comparison.
type filter struct {
	op       string
	children []*filter
	field    string
	kind     kind
	operator string
	values   []any // string, float64, bool, or int64 (day start for dates); nil for null
}

// parseFilter checks a query node against the documented rules.
func (c *call) parseFilter(x any, depth int) (*filter, string) {
	m, ok := x.(map[string]any)
	if !ok {
		return nil, "Each filter must be an object"
	}
	if _, single := m["field"]; single {
		return c.parseSingle(m)
	}
	op, _ := m["operator"].(string)
	if op != "AND" && op != "OR" {
		return nil, fmt.Sprintf("Invalid operator %v for a group of filters: use AND or OR", m["operator"])
	}
	if depth > maxDepth {
		return nil, fmt.Sprintf("Filters can be nested at most %d levels deep", maxDepth)
	}
	list, ok := m["value"].([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Sprintf("The %s group needs a non-empty array of filters as its value", op)
	}
	if len(list) > maxGroup {
		return nil, fmt.Sprintf("A group may hold at most %d filters, not %d", maxGroup, len(list))
	}
	g := &filter{op: op}
	for _, item := range list {
		child, msg := c.parseFilter(item, depth+1)
		if msg != "" {
			return nil, msg
		}
		g.children = append(g.children, child)
	}
	return g, ""
}

// fieldKind resolves a field name, including custom_attributes.<name>.
func (c *call) fieldKind(field string) (kind, bool) {
	if k, ok := standardFields[field]; ok {
		return k, true
	}
	name, ok := strings.CutPrefix(field, "custom_attributes.")
	if !ok {
		return 0, false
	}
	a := c.ws.attrByName[strings.ToLower(name)]
	if a == nil || a.model != "contact" || a.name != name {
		return 0, false
	}
	switch a.dataType {
	case "integer", "float":
		return kindNumber, true
	case "boolean":
		return kindBool, true
	case "date":
		return kindDate, true
	}
	return kindString, true
}

func (c *call) parseSingle(m map[string]any) (*filter, string) {
	field, _ := m["field"].(string)
	k, ok := c.fieldKind(field)
	if !ok {
		return nil, fmt.Sprintf("%v is not a searchable field", m["field"])
	}
	op, _ := m["operator"].(string)
	if !slices.Contains(operatorsFor[k], op) {
		return nil, fmt.Sprintf("Operator %v is not supported for field %s", m["operator"], field)
	}
	f := &filter{field: field, kind: k, operator: op}
	raw := m["value"]
	if op == "IN" || op == "NIN" {
		list, ok := raw.([]any)
		if !ok {
			return nil, fmt.Sprintf("The %s operator needs an array value for field %s", op, field)
		}
		for _, v := range list {
			val, ok := scalar(k, v)
			if !ok || val == nil {
				return nil, fmt.Sprintf("Invalid value %v for field %s", v, field)
			}
			f.values = append(f.values, val)
		}
		return f, ""
	}
	if raw == nil {
		// null means "has no value": only = and != make sense.
		if op != "=" && op != "!=" {
			return nil, fmt.Sprintf("A null value needs the = or != operator for field %s", field)
		}
		f.values = []any{nil}
		return f, ""
	}
	val, ok := scalar(k, raw)
	if !ok {
		return nil, fmt.Sprintf("Invalid value %v for field %s", raw, field)
	}
	f.values = []any{val}
	return f, ""
}

// scalar converts a query value to the field's type. The spec's example
// passes a timestamp as a string ("1306054154"), so digit strings are
// accepted for numbers and dates.
func scalar(k kind, v any) (any, bool) {
	switch k {
	case kindString:
		switch x := v.(type) {
		case string:
			return x, true
		case json.Number:
			if _, err := x.Int64(); err == nil {
				return x.String(), true
			}
		}
	case kindNumber:
		var s string
		switch x := v.(type) {
		case json.Number:
			s = x.String()
		case string:
			s = x
		default:
			return nil, false
		}
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
	case kindBool:
		switch x := v.(type) {
		case bool:
			return x, true
		case string:
			b, err := strconv.ParseBool(x)
			return b, err == nil && (x == "true" || x == "false")
		}
	case kindDate:
		var s string
		switch x := v.(type) {
		case json.Number:
			s = x.String()
		case string:
			s = x
		default:
			return nil, false
		}
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, false
		}
		return dayStart(t), true
	}
	return nil, false
}

// dayStart truncates Unix seconds to the start of the UTC day: search
// matches dates by calendar day in the workspace's time zone, and emulated
// workspaces are in UTC.
func dayStart(t int64) int64 {
	return t - ((t%86400)+86400)%86400
}

// value returns a contact's value for field, converted like scalar, or nil.
func (c *call) value(ct *Contact, field string, k kind) any {
	var v any
	switch field {
	case "id":
		v = ct.ID
	case "role":
		v = ct.Role
	case "email":
		v = ct.Email
	case "email_domain":
		v = ct.emailDomain()
	case "external_id":
		v = ct.ExternalID
	case "name":
		v = deref(ct.Name)
	case "phone":
		v = deref(ct.Phone)
	case "owner_id":
		v = deref(ct.OwnerID)
	case "created_at":
		return ct.CreatedAt.Unix()
	case "updated_at":
		return ct.UpdatedAt.Unix()
	case "signed_up_at":
		if ct.SignedUpAt == nil {
			return nil
		}
		return *ct.SignedUpAt
	case "last_seen_at":
		if ct.LastSeenAt == nil {
			return nil
		}
		return *ct.LastSeenAt
	case "unsubscribed_from_emails":
		return ct.UnsubscribedFromEmails
	default:
		name := strings.TrimPrefix(field, "custom_attributes.")
		raw, ok := ct.CustomAttributes[name]
		if !ok {
			return nil
		}
		switch k {
		case kindDate:
			// Stored dates keep their full value; matching truncates.
			if n, ok := raw.(json.Number); ok {
				if i, err := n.Int64(); err == nil {
					return i
				}
			}
			return nil
		case kindNumber:
			if f, ok := jsonNumber(raw); ok {
				return f
			}
			return nil
		default: // strings and booleans
			val, ok := scalar(k, raw)
			if !ok {
				return nil
			}
			return val
		}
	}
	if v == "" {
		return nil
	}
	return v
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (c *call) match(f *filter, ct *Contact) bool {
	switch f.op {
	case "AND":
		for _, ch := range f.children {
			if !c.match(ch, ct) {
				return false
			}
		}
		return true
	case "OR":
		for _, ch := range f.children {
			if c.match(ch, ct) {
				return true
			}
		}
		return false
	}
	got := c.value(ct, f.field, f.kind)
	fold := foldedFields[f.field]
	eq := func(want any) bool {
		if got == nil || want == nil {
			return got == want
		}
		if f.kind == kindDate {
			return dayStart(got.(int64)) == want.(int64)
		}
		if fold {
			return strings.EqualFold(got.(string), want.(string))
		}
		return got == want
	}
	want := f.values[0]
	// Negations (!=, NIN, !~) match contacts without a value; every other
	// operator needs one.
	switch f.operator {
	case "=":
		return eq(want)
	case "!=":
		return !eq(want)
	case "IN":
		return slices.ContainsFunc(f.values, eq)
	case "NIN":
		return !slices.ContainsFunc(f.values, eq)
	}
	if got == nil {
		return f.operator == "!~"
	}
	switch f.kind {
	case kindDate:
		t, day := got.(int64), want.(int64)
		if f.operator == "<" {
			return t < day
		}
		return t >= day+86400 // ">" starts at the next day
	case kindNumber:
		a, b := got.(float64), want.(float64)
		switch f.operator {
		case "<":
			return a < b
		case "<=":
			return a <= b
		case ">":
			return a > b
		case ">=":
			return a >= b
		}
	case kindString:
		a, b := got.(string), want.(string)
		if fold {
			a, b = strings.ToLower(a), strings.ToLower(b)
		}
		switch f.operator {
		case "~":
			return strings.Contains(a, b)
		case "!~":
			return !strings.Contains(a, b)
		case "^":
			return strings.HasPrefix(a, b)
		case "$":
			return strings.HasSuffix(a, b)
		}
	default:
		// Booleans take only =, !=, IN and NIN, answered above.
	}
	return false
}

// cursor is the opaque starting_after value: the page it starts and the
// sort position of the last contact returned, so that pages stay correct
// when contacts are added in between.
type cursor struct {
	Page  int    `json:"p"`
	Key   any    `json:"k"`
	ID    string `json:"i"`
	Field string `json:"f"`
	Desc  bool   `json:"d"`
}

func (cur cursor) encode() string {
	b, _ := json.Marshal(cur)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false
	}
	var cur cursor
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&cur); err != nil || cur.Page < 1 || cur.ID == "" {
		return cursor{}, false
	}
	if n, ok := cur.Key.(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			cur.Key = i
		} else if f, err := n.Float64(); err == nil {
			cur.Key = f
		}
	}
	return cur, true
}

// compareKeys orders sort keys: null first, then numbers, strings, booleans.
func compareKeys(a, b any) int {
	rank := func(v any) int {
		switch v.(type) {
		case nil:
			return 0
		case int64, float64:
			return 1
		case string:
			return 2
		}
		return 3
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return cmp.Compare(ra, rb)
	}
	switch x := a.(type) {
	case int64:
		if y, ok := b.(int64); ok {
			return cmp.Compare(x, y)
		}
		return cmp.Compare(float64(x), toFloat(b))
	case float64:
		return cmp.Compare(x, toFloat(b))
	case string:
		return strings.Compare(x, b.(string))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	}
	return 0
}

func toFloat(v any) float64 {
	if i, ok := v.(int64); ok {
		return float64(i)
	}
	return v.(float64)
}

type searchPages struct {
	Type       string      `json:"type"`
	Page       int         `json:"page"`
	PerPage    int         `json:"per_page"`
	TotalPages int         `json:"total_pages"`
	Next       *nextCursor `json:"next,omitempty"`
}

type nextCursor struct {
	PerPage       int    `json:"per_page"`
	StartingAfter string `json:"starting_after"`
}

type contactList struct {
	Type       string        `json:"type"`
	Data       []contactJSON `json:"data"`
	TotalCount int           `json:"total_count"`
	Pages      searchPages   `json:"pages"`
}

// search serves POST /contacts/search. Contacts younger than the search lag
// are left out: Intercom's index trails its writes by "a few minutes".
func (c *call) search() *response {
	bad := func(msg string) *response { return c.s.fail(http.StatusBadRequest, "parameter_invalid", msg) }
	q, ok := c.body["query"]
	if !ok {
		return bad("'query' is required")
	}
	root, msg := c.parseFilter(q, 1)
	if msg != "" {
		return bad(msg)
	}

	perPage, after := defaultPerPage, ""
	switch p := c.body["pagination"].(type) {
	case nil:
	case map[string]any:
		if x, ok := p["per_page"]; ok && x != nil {
			n, ok := x.(json.Number)
			v, err := n.Int64()
			if !ok || err != nil || v < 1 || v > maxPerPage {
				return bad(fmt.Sprintf("'per_page' must be an integer from 1 to %d", maxPerPage))
			}
			perPage = int(v)
		}
		if x, ok := p["starting_after"]; ok && x != nil {
			if after, ok = x.(string); !ok {
				return bad(typeMsg("starting_after", "a string or null"))
			}
		}
	default:
		return bad(typeMsg("pagination", "an object"))
	}

	// Sort is documented from 2.16 on; earlier versions ignore it.
	field, desc := "created_at", false
	if s, ok := c.body["sort"]; ok && s != nil && c.ver.atLeast(2, 16) {
		m, ok := s.(map[string]any)
		if !ok {
			return bad(typeMsg("sort", "an object"))
		}
		if f, ok := m["field"]; ok {
			name, _ := f.(string)
			if _, known := c.fieldKind(name); !known {
				return bad(fmt.Sprintf("%v is not a sortable field", f))
			}
			field = name
		}
		desc = true // the spec's default order
		if o, ok := m["order"]; ok {
			switch o {
			case "ascending":
				desc = false
			case "descending":
			default:
				return c.s.fail(http.StatusBadRequest, "invalid_sort_order",
					fmt.Sprintf("Invalid sort order '%v'. Must be one of: ascending, descending", o))
			}
		}
	}
	kind, _ := c.fieldKind(field)

	now, lag := c.s.now(), c.s.lag
	type row struct {
		ct  *Contact
		key any
	}
	var rows []row
	for _, ct := range c.ws.candidates(root) {
		if now.Sub(ct.CreatedAt) < lag || !c.match(root, ct) {
			continue
		}
		rows = append(rows, row{ct, c.value(ct, field, kind)})
	}
	order := func(key any, id string, r row) int {
		n := compareKeys(key, r.key)
		if n == 0 {
			n = strings.Compare(id, r.ct.ID)
		}
		if desc {
			n = -n
		}
		return n
	}
	slices.SortFunc(rows, func(a, b row) int { return order(a.key, a.ct.ID, b) })

	page, start := 1, 0
	if after != "" {
		cur, ok := decodeCursor(after)
		if !ok || cur.Field != field || cur.Desc != desc {
			return bad("'starting_after' is not a cursor from this search")
		}
		page = cur.Page + 1
		start, _ = slices.BinarySearchFunc(rows, cur, func(r row, cur cursor) int {
			return -order(cur.Key, cur.ID, r)
		})
		for start < len(rows) && rows[start].ct.ID == cur.ID {
			start++
		}
	}
	end := min(start+perPage, len(rows))
	out := contactList{
		Type:       "list",
		Data:       []contactJSON{},
		TotalCount: len(rows),
		Pages: searchPages{
			Type:       "pages",
			Page:       page,
			PerPage:    perPage,
			TotalPages: (len(rows) + perPage - 1) / perPage,
		},
	}
	for _, r := range rows[start:end] {
		out.Data = append(out.Data, c.render(r.ct))
	}
	if end < len(rows) {
		last := rows[end-1]
		out.Pages.Next = &nextCursor{
			PerPage:       perPage,
			StartingAfter: cursor{Page: page, Key: last.key, ID: last.ct.ID, Field: field, Desc: desc}.encode(),
		}
	}
	return c.s.reply(http.StatusOK, out)
}
