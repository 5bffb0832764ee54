package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// property is a contact property definition.
type property struct {
	name, label, typ, fieldType, group string
	unique, hubspotDefined, readOnly   bool
	// anyOption marks an enumeration whose options come from elsewhere
	// (hubspot_owner_id: the account's users), so any value is accepted.
	anyOption bool
	options   []string
	created   time.Time
}

// lifecycleStages are the default lifecycle stages' internal values, in
// order. Accounts can customise them; the emulator keeps the defaults.
var lifecycleStages = []string{"subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist", "other"}

// defaultProperties are the HubSpot-defined contact properties the
// emulator knows: the ones the adapter maps, a few common others, and the
// read-only system properties every contact carries.
func defaultProperties() []*property {
	str := func(name, label, fieldType string) *property {
		return &property{name: name, label: label, typ: "string", fieldType: fieldType, group: "contactinformation", hubspotDefined: true}
	}
	return []*property{
		str("email", "Email", "text"),
		str("firstname", "First Name", "text"),
		str("lastname", "Last Name", "text"),
		str("phone", "Phone Number", "phonenumber"),
		str("mobilephone", "Mobile Phone Number", "phonenumber"),
		str("company", "Company Name", "text"),
		str("website", "Website URL", "text"),
		str("jobtitle", "Job Title", "text"),
		str("city", "City", "text"),
		str("country", "Country/Region", "text"),
		{name: "lifecyclestage", label: "Lifecycle Stage", typ: "enumeration", fieldType: "radio", group: "contactinformation",
			hubspotDefined: true, options: lifecycleStages},
		{name: "hubspot_owner_id", label: "Contact owner", typ: "enumeration", fieldType: "select", group: "contactinformation",
			hubspotDefined: true, anyOption: true},
		{name: "hs_object_id", label: "Record ID", typ: "number", fieldType: "number", group: "contactinformation",
			hubspotDefined: true, readOnly: true},
		{name: "createdate", label: "Create Date", typ: "datetime", fieldType: "date", group: "contactinformation",
			hubspotDefined: true, readOnly: true},
		{name: "lastmodifieddate", label: "Last Modified Date", typ: "datetime", fieldType: "date", group: "contactinformation",
			hubspotDefined: true, readOnly: true},
	}
}

func defaultProperty(name string) bool {
	return slices.ContainsFunc(defaultProperties(), func(p *property) bool { return p.name == name })
}

// propertyGroups are the contact property groups that exist; a created
// property must name one.
var propertyGroups = []string{"contactinformation", "conversioninformation", "emailinformation", "socialmediainformation", "analyticsinformation"}

var (
	propertyTypes = []string{"bool", "date", "datetime", "enumeration", "number", "phone_number", "string"}
	fieldTypes    = []string{"booleancheckbox", "calculation_equation", "checkbox", "date", "file", "html", "number", "phonenumber", "radio", "select", "text", "textarea"}
)

type optionJSON struct {
	Label        string `json:"label"`
	Value        string `json:"value"`
	DisplayOrder int    `json:"displayOrder"`
	Hidden       bool   `json:"hidden"`
}

type propertyJSON struct {
	Name                 string       `json:"name"`
	Label                string       `json:"label"`
	Type                 string       `json:"type"`
	FieldType            string       `json:"fieldType"`
	GroupName            string       `json:"groupName"`
	Description          string       `json:"description"`
	HasUniqueValue       bool         `json:"hasUniqueValue"`
	HubspotDefined       bool         `json:"hubspotDefined,omitempty"`
	Hidden               bool         `json:"hidden"`
	FormField            bool         `json:"formField"`
	Calculated           bool         `json:"calculated"`
	ExternalOptions      bool         `json:"externalOptions"`
	DisplayOrder         int          `json:"displayOrder"`
	Options              []optionJSON `json:"options"`
	ModificationMetadata struct {
		Archivable         bool `json:"archivable"`
		ReadOnlyDefinition bool `json:"readOnlyDefinition"`
		ReadOnlyValue      bool `json:"readOnlyValue"`
	} `json:"modificationMetadata"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
	Archived  bool   `json:"archived"`
}

func (p *property) render() propertyJSON {
	out := propertyJSON{
		Name: p.name, Label: p.label, Type: p.typ, FieldType: p.fieldType, GroupName: p.group,
		HasUniqueValue: p.unique, HubspotDefined: p.hubspotDefined, FormField: !p.readOnly,
		ExternalOptions: p.anyOption, DisplayOrder: -1, Options: []optionJSON{},
		CreatedAt: stamp(p.created), UpdatedAt: stamp(p.created),
	}
	for i, o := range p.options {
		out.Options = append(out.Options, optionJSON{Label: o, Value: o, DisplayOrder: i})
	}
	out.ModificationMetadata.Archivable = !p.hubspotDefined
	out.ModificationMetadata.ReadOnlyDefinition = p.hubspotDefined
	out.ModificationMetadata.ReadOnlyValue = p.readOnly
	return out
}

// stamp formats a time as HubSpot does: ISO 8601 in UTC with milliseconds.
func stamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func (c *call) listProperties() *response {
	out := make([]propertyJSON, 0, len(c.a.props))
	for _, p := range c.a.props {
		out = append(out, p.render())
	}
	return c.s.reply(http.StatusOK, map[string]any{"results": out})
}

// createProperty creates a contact property. The 409 for an existing name
// and the wording of the 400s are undocumented choices.
func (c *call) createProperty() *response {
	var problems []string
	str := func(k string, required bool) string {
		v, ok := c.body[k]
		s, isStr := v.(string)
		switch {
		case !ok || v == nil:
			if required {
				problems = append(problems, fmt.Sprintf("%s is required", k))
			}
		case !isStr:
			problems = append(problems, fmt.Sprintf("%s must be a string", k))
		}
		return s
	}
	name, label, typ := str("name", true), str("label", true), str("type", true)
	fieldType, group := str("fieldType", true), str("groupName", true)
	str("description", false)
	if name != "" && !propertyNameRE.MatchString(name) {
		problems = append(problems, fmt.Sprintf("name %q must start with a lower-case letter and contain only lower-case letters, digits and '_'", name))
	}
	if typ != "" && !slices.Contains(propertyTypes, typ) {
		problems = append(problems, fmt.Sprintf("type %q is not one of %s", typ, strings.Join(propertyTypes, ", ")))
	}
	if fieldType != "" && !slices.Contains(fieldTypes, fieldType) {
		problems = append(problems, fmt.Sprintf("fieldType %q is not one of %s", fieldType, strings.Join(fieldTypes, ", ")))
	}
	if group != "" && !slices.Contains(propertyGroups, group) {
		problems = append(problems, fmt.Sprintf("groupName %q is not a property group", group))
	}
	unique := false
	if v, ok := c.body["hasUniqueValue"]; ok && v != nil {
		b, isBool := v.(bool)
		if !isBool {
			problems = append(problems, "hasUniqueValue must be a boolean")
		}
		unique = b
	}
	var options []string
	if raw, ok := c.body["options"]; ok && raw != nil {
		list, isList := raw.([]any)
		if !isList {
			problems = append(problems, "options must be an array")
		}
		for _, o := range list {
			m, _ := o.(map[string]any)
			v, _ := m["value"].(string)
			if v == "" {
				problems = append(problems, "every option needs a value")
				continue
			}
			options = append(options, v)
		}
	}
	if typ == "enumeration" && len(options) == 0 {
		problems = append(problems, "options are required for an enumeration")
	}
	if len(problems) > 0 {
		return c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input: "+strings.Join(problems, "; "))
	}
	if c.a.propByName[name] != nil {
		return c.s.fail(http.StatusConflict, "CONFLICT", fmt.Sprintf("Property named '%s' already exists.", name))
	}
	p := &property{name: name, label: label, typ: typ, fieldType: fieldType, group: group, unique: unique, options: options, created: c.now}
	c.a.addProperty(p)
	c.rec.Committed = true
	return c.s.reply(http.StatusCreated, p.render())
}

// propertyError is one item of a 400 VALIDATION_ERROR about property
// values. HubSpot embeds these items, JSON-encoded, in the message after
// "Property values were not valid: ".
type propertyError struct {
	IsValid bool   `json:"isValid"`
	Message string `json:"message"`
	Error   string `json:"error"`
	Name    string `json:"name"`
}

// checkValues converts and checks the "properties" object of a create or
// update. A value may be a string, a number or a boolean (sent as their
// text) or null (which, like "", clears the property).
func (c *call) checkValues(raw any) (map[string]string, *response) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, c.s.fail(http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
	}
	var bad []propertyError
	out := make(map[string]string, len(m))
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		var v string
		switch x := m[k].(type) {
		case nil:
		case string:
			v = x
		case json.Number:
			v = x.String()
		case bool:
			v = fmt.Sprint(x)
		default:
			bad = append(bad, propertyError{Message: fmt.Sprintf("%s must be a string", k), Error: "INVALID_TYPE", Name: k})
			continue
		}
		p := c.a.propByName[k]
		switch {
		case p == nil:
			bad = append(bad, propertyError{Message: fmt.Sprintf("Property \"%s\" does not exist", k), Error: "PROPERTY_DOESNT_EXIST", Name: k})
			continue
		case p.readOnly:
			bad = append(bad, propertyError{Message: fmt.Sprintf("%s is a read only property; its value cannot be set.", k), Error: "READ_ONLY_VALUE", Name: k})
			continue
		case v != "" && p.typ == "enumeration" && !p.anyOption && !slices.Contains(p.options, v):
			bad = append(bad, propertyError{Message: fmt.Sprintf("%s was not one of the allowed options: [%s]", v, strings.Join(p.options, ", ")),
				Error: "INVALID_OPTION", Name: k})
			continue
		case v != "" && k == "email" && !validEmail(v):
			bad = append(bad, propertyError{Message: fmt.Sprintf("Email address %s is invalid", v), Error: "INVALID_EMAIL", Name: k})
			continue
		case v != "" && p.typ == "number" && !isNumber(v):
			bad = append(bad, propertyError{Message: fmt.Sprintf("%s was not a valid number", v), Error: "INVALID_INTEGER", Name: k})
			continue
		case v != "" && p.typ == "bool" && v != "true" && v != "false":
			bad = append(bad, propertyError{Message: fmt.Sprintf("%s is not a valid boolean", v), Error: "INVALID_BOOLEAN", Name: k})
			continue
		case v != "" && (p.typ == "date" || p.typ == "datetime"):
			if msg := checkTime(v, p.typ == "date"); msg != "" {
				bad = append(bad, propertyError{Message: fmt.Sprintf("%s %s", v, msg), Error: "INVALID_DATE", Name: k})
				continue
			}
		}
		if k == "email" {
			v = strings.ToLower(strings.TrimSpace(v))
		}
		out[k] = v
	}
	if len(bad) > 0 {
		items, _ := json.Marshal(bad)
		e := errorJSON{Category: "VALIDATION_ERROR", Message: "Property values were not valid: " + string(items)}
		for _, b := range bad {
			e.Errors = append(e.Errors, errorDetail{Message: b.Message, Code: b.Error, Context: map[string][]string{"propertyName": {b.Name}}})
		}
		return nil, c.s.failWith(http.StatusBadRequest, e)
	}
	return out, nil
}

func validEmail(s string) bool {
	s = strings.TrimSpace(s)
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && strings.Contains(domain, ".") && !strings.ContainsAny(s, " ,;<>")
}

// checkTime checks a date or datetime value: epoch milliseconds or ISO
// 8601, and for a date, midnight UTC. The error code is undocumented.
func checkTime(v string, date bool) string {
	var t time.Time
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		t = time.UnixMilli(ms).UTC()
	} else if d, err := time.Parse(time.DateOnly, v); err == nil {
		t = d
	} else if d, err := time.Parse(time.RFC3339Nano, v); err == nil {
		t = d.UTC()
	} else {
		return "is not a valid date: use epoch milliseconds or ISO 8601"
	}
	if date && !t.Equal(t.Truncate(24*time.Hour)) {
		return "is not midnight UTC, as a date property needs"
	}
	return ""
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
