package emulator

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
)

// attribute is a data attribute: standard (built in) or custom (created
// through the API, or listed in Workspace.Attributes).
type attribute struct {
	id                int
	model             string // contact or company
	name              string
	dataType          string // as reported: string, integer, float, boolean or date
	options           []string
	description       string
	custom            bool
	apiWritable       bool
	messengerWritable bool
	created           time.Time
}

// standardAttributes are a few of Intercom's built-in attributes, enough for
// clients that list attributes to tell standard from custom ones.
var standardAttributes = []attribute{
	{model: "contact", name: "name", dataType: "string", apiWritable: true, description: "The name of the contact"},
	{model: "contact", name: "email", dataType: "string", apiWritable: true, description: "The email address of the contact"},
	{model: "contact", name: "phone", dataType: "string", apiWritable: true, description: "The phone number of the contact"},
	{model: "contact", name: "external_id", dataType: "string", apiWritable: true, description: "The unique identifier given to the contact by you"},
	{model: "contact", name: "role", dataType: "string", description: "User or lead"},
	{model: "contact", name: "owner_id", dataType: "integer", apiWritable: true, description: "The admin who owns the contact"},
	{model: "contact", name: "created_at", dataType: "date", description: "When the contact was created"},
	{model: "contact", name: "updated_at", dataType: "date", description: "When the contact was last updated"},
	{model: "contact", name: "signed_up_at", dataType: "date", apiWritable: true, description: "When the user signed up"},
	{model: "contact", name: "last_seen_at", dataType: "date", apiWritable: true, description: "When the contact was last seen"},
	{model: "contact", name: "unsubscribed_from_emails", dataType: "boolean", apiWritable: true, description: "Whether the contact unsubscribed from emails"},
	{model: "company", name: "name", dataType: "string", apiWritable: true, description: "The name of a company"},
	{model: "company", name: "company_id", dataType: "string", description: "A number identifying a company"},
	{model: "company", name: "monthly_spend", dataType: "float", apiWritable: true, description: "The monthly revenue you receive from a company"},
	{model: "company", name: "website", dataType: "string", apiWritable: true, description: "The web address for the company's primary marketing site"},
}

// dataLabel is the noun Intercom's duplicate-name message uses per model.
var dataLabel = map[string]string{"contact": "people", "company": "company"}

// checkAttributeName returns why name cannot name a new contact attribute,
// or "". The spec's message allows alphanumerics, currency symbols and
// hyphens, but its own successful examples contain spaces ("Mithril Shirt")
// and underscores ("paid_subscriber"), so those pass too. Dots would break
// the "custom_attributes.<name>" full name and are refused.
func checkAttributeName(name string) string {
	return checkName("contact", name)
}

func checkName(model, name string) string {
	if strings.TrimSpace(name) == "" {
		return "'name' must not be blank"
	}
	for _, r := range name {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.Is(unicode.Sc, r) && r != '-' && r != '_' && r != ' ' {
			return "Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens"
		}
	}
	for _, a := range standardAttributes {
		if a.model == model && strings.EqualFold(a.name, name) {
			return fmt.Sprintf("'%s' is one of our standard attributes, please use a different name", name)
		}
	}
	return ""
}

func (ws *workspace) addAttribute(a *attribute) {
	ws.attrs = append(ws.attrs, a)
	ws.attrByName[strings.ToLower(a.name)] = a
}

// attributeJSON is components/schemas/data_attribute.
type attributeJSON struct {
	ID                int      `json:"id,omitempty"`
	Type              string   `json:"type"`
	Model             string   `json:"model"`
	Name              string   `json:"name"`
	FullName          string   `json:"full_name"`
	Label             string   `json:"label"`
	Description       string   `json:"description,omitempty"`
	DataType          string   `json:"data_type"`
	Options           []string `json:"options,omitempty"`
	APIWritable       bool     `json:"api_writable"`
	UIWritable        bool     `json:"ui_writable"`
	MessengerWritable bool     `json:"messenger_writable"`
	Custom            bool     `json:"custom"`
	Archived          bool     `json:"archived"`
	CreatedAt         int64    `json:"created_at,omitempty"`
	UpdatedAt         int64    `json:"updated_at,omitempty"`
	AdminID           string   `json:"admin_id,omitempty"`
}

func (ws *workspace) renderAttribute(a *attribute) attributeJSON {
	out := attributeJSON{
		Type:              "data_attribute",
		Model:             a.model,
		Name:              a.name,
		FullName:          a.name,
		Label:             a.name,
		Description:       a.description,
		DataType:          a.dataType,
		Options:           a.options,
		APIWritable:       a.apiWritable,
		MessengerWritable: a.messengerWritable,
		Custom:            a.custom,
	}
	if a.custom {
		// Only custom attributes have an id, a creator and timestamps.
		out.ID = a.id
		out.FullName = "custom_attributes." + a.name
		out.CreatedAt = a.created.Unix()
		out.UpdatedAt = a.created.Unix()
		out.AdminID = ws.adminID
	}
	return out
}

type attributeList struct {
	Type string          `json:"type"`
	Data []attributeJSON `json:"data"`
}

// listAttributes serves GET /data_attributes. Without model it lists both
// contact and company attributes; archiving is not modelled, so
// include_archived changes nothing.
func (c *call) listAttributes() *response {
	model := ""
	if v, ok := c.query["model"]; ok {
		model = v[0]
	}
	switch model {
	case "", "contact", "company":
	case "conversation":
		return c.s.fail(http.StatusUnprocessableEntity, "parameter_invalid",
			"model=conversation is no longer supported. Use GET /conversations/attributes instead")
	default:
		// The spec documents 422 for model=conversation; other unknown
		// models are answered the same way.
		return c.s.fail(http.StatusUnprocessableEntity, "parameter_invalid",
			fmt.Sprintf("model=%s is not supported. Use contact or company", model))
	}
	out := attributeList{Type: "list", Data: []attributeJSON{}}
	for i := range standardAttributes {
		if a := &standardAttributes[i]; model == "" || a.model == model {
			out.Data = append(out.Data, c.ws.renderAttribute(a))
		}
	}
	for _, a := range c.ws.attrs {
		if model == "" || a.model == model {
			out.Data = append(out.Data, c.ws.renderAttribute(a))
		}
	}
	return c.s.reply(http.StatusOK, out)
}

// createAttribute serves POST /data_attributes.
func (c *call) createAttribute() *response {
	bad := func(msg string) *response { return c.s.fail(http.StatusBadRequest, "parameter_invalid", msg) }
	f := c.body
	name, hasName, msg := f.str("name")
	if msg != "" {
		return bad(msg)
	}
	model, _, msg := f.str("model")
	if msg != "" {
		return bad(msg)
	}
	dataType, _, msg := f.str("data_type")
	if msg != "" {
		return bad(msg)
	}
	desc, _, msg := f.str("description")
	if msg != "" {
		return bad(msg)
	}
	mw, _, msg := f.nullBool("messenger_writable")
	if msg != "" {
		return bad(msg)
	}
	if model != "contact" && model != "company" {
		return bad("The Data Attribute model field must be either contact or company")
	}
	if !hasName {
		return bad("'name' is required")
	}
	if msg := checkName(model, name); msg != "" {
		return bad(msg)
	}
	if a := c.ws.attrByName[strings.ToLower(name)]; a != nil {
		// Names are unique across models, as the spec's "Same name
		// already exists" example (company attribute, contact request)
		// shows.
		return bad(fmt.Sprintf("You already have '%s' in your %s data. To save this as new %s data, use a different name.",
			a.name, dataLabel[a.model], dataLabel[model]))
	}
	// The response schema knows only string, integer, float, boolean and
	// date, so datetime is reported as date and a list (data_type
	// options, from 2.14 on) as string with its options.
	reported := dataType
	var options []string
	switch dataType {
	case "string", "integer", "float", "boolean", "date":
	case "datetime":
		reported = "date"
	case "options":
		if !c.ver.atLeast(2, 14) {
			return bad("Data Type isn't an option")
		}
		list, _ := f["options"].([]any)
		for _, o := range list {
			m, _ := o.(map[string]any)
			v, _ := m["value"].(string)
			if strings.TrimSpace(v) == "" {
				return bad("Each option must be an object with a non-blank string value")
			}
			if slices.Contains(options, v) {
				return bad(fmt.Sprintf("The option '%s' is listed twice", v))
			}
			options = append(options, v)
		}
		if len(options) < 2 {
			return bad("You must have at least two options on a list type data attribute")
		}
		reported = "string"
	default:
		return bad("Data Type isn't an option")
	}
	c.s.attrSeq++
	a := &attribute{
		id:                c.s.attrSeq,
		model:             model,
		name:              name,
		dataType:          reported,
		options:           options,
		description:       desc,
		custom:            true,
		apiWritable:       true,
		messengerWritable: mw != nil && *mw,
		created:           c.s.now(),
	}
	c.ws.addAttribute(a)
	c.rec.Committed = true
	return c.s.reply(http.StatusOK, c.ws.renderAttribute(a))
}
