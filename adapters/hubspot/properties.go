package hubspot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/referrer-sync/referrer-sync/ports"
)

// Property is a contact property definition, from the properties API.
type Property struct {
	Name      string
	Label     string
	Type      string // string, number, enumeration, datetime, ...
	FieldType string
	Group     string
	// Unique is hasUniqueValue: the property can serve as idProperty.
	Unique bool
	// ReadOnly is modificationMetadata.readOnlyValue: writes are refused.
	ReadOnly       bool
	HubSpotDefined bool
	Archived       bool
	Options        []string // option values of an enumeration
}

// Properties lists the account's contact properties with
// GET …/properties/contacts.
func (c *Client) Properties(ctx context.Context) ([]Property, error) {
	ps, err := c.properties(ctx)
	return ps, c.fail(err)
}

func (c *Client) properties(ctx context.Context) ([]Property, error) {
	res, err := c.send(ctx, call{op: OpListProperties, method: http.MethodGet, path: c.cfg.propertiesPath(), policy: repeatable})
	if err != nil {
		return nil, err
	}
	if res.status != http.StatusOK {
		return nil, c.adminError(OpListProperties, res)
	}
	var list struct {
		Results []struct {
			Name                 string `json:"name"`
			Label                string `json:"label"`
			Type                 string `json:"type"`
			FieldType            string `json:"fieldType"`
			GroupName            string `json:"groupName"`
			HasUniqueValue       bool   `json:"hasUniqueValue"`
			HubspotDefined       bool   `json:"hubspotDefined"`
			Archived             bool   `json:"archived"`
			ModificationMetadata *struct {
				ReadOnlyValue bool `json:"readOnlyValue"`
			} `json:"modificationMetadata"`
			Options []struct {
				Value string `json:"value"`
			} `json:"options"`
		} `json:"results"`
	}
	if err := json.Unmarshal(res.body, &list); err != nil {
		return nil, &ports.Error{Op: OpListProperties, Kind: ports.Transient, Status: res.status, Err: fmt.Errorf("decode properties: %w", err)}
	}
	out := make([]Property, 0, len(list.Results))
	for _, r := range list.Results {
		p := Property{Name: r.Name, Label: r.Label, Type: r.Type, FieldType: r.FieldType, Group: r.GroupName,
			Unique: r.HasUniqueValue, HubSpotDefined: r.HubspotDefined, Archived: r.Archived}
		if r.ModificationMetadata != nil {
			p.ReadOnly = r.ModificationMetadata.ReadOnlyValue
		}
		for _, o := range r.Options {
			p.Options = append(p.Options, o.Value)
		}
		out = append(out, p)
	}
	types := make(map[string]string, len(out))
	for _, p := range out {
		if !p.Archived {
			types[p.Name] = p.Type
		}
	}
	c.mu.Lock()
	c.types = types
	c.mu.Unlock()
	return out, nil
}

// adminError classifies failures of the account-level calls, for which a
// 404 means a wrong base URL or version, not a missing contact.
func (c *Client) adminError(op string, res response) *ports.Error {
	pe := c.statusError(op, res)
	if pe.Kind == ports.NotFound {
		pe.Kind = ports.Permanent
	}
	return pe
}

// PropertyError lists everything wrong with an account's contact
// properties for this connection, so an operator fixes them in one round.
type PropertyError struct {
	// Missing are mapped properties (and the marker and external id
	// properties) the account does not have, sorted.
	Missing []string
	// ReadOnly are mapped properties whose values cannot be written.
	ReadOnly []string
	// Problems are the other findings: an external id property without
	// unique values, a lifecycle stage that is not an option.
	Problems []string
}

func (e *PropertyError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing contact properties: "+strings.Join(e.Missing, ", "))
	}
	if len(e.ReadOnly) > 0 {
		parts = append(parts, "read-only contact properties: "+strings.Join(e.ReadOnly, ", "))
	}
	parts = append(parts, e.Problems...)
	return strings.Join(parts, "; ")
}

// CheckProperties verifies, at start-up, that the account has every
// contact property the connection writes: names (the targets the campaigns
// map, as HubSpot spells them), email, lifecyclestage (with LeadStage and
// UserStage among its options), the marker property and, when configured,
// the external id property (with unique values). Every finding is
// reported at once in a *PropertyError inside a Permanent *ports.Error; a
// failure to list the properties keeps its own kind (Unauthorized for a
// bad token, so this also proves the token). Without the check, every
// create mapping an unknown property would be refused with 400 and
// dead-lettered. It also learns the properties' types, so that times are
// then written as date and datetime properties need them.
func (c *Client) CheckProperties(ctx context.Context, names []string) error {
	props, err := c.properties(ctx)
	if err != nil {
		return c.fail(err)
	}
	byName := make(map[string]Property, len(props))
	for _, p := range props {
		if !p.Archived {
			byName[p.Name] = p
		}
	}
	want := slices.Clone(names)
	want = append(want, propEmail, propLifecycleStage, c.cfg.MarkerProperty)
	if c.cfg.ExternalIDProperty != "" {
		want = append(want, c.cfg.ExternalIDProperty)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	pe := &PropertyError{}
	for _, n := range want {
		p, ok := byName[n]
		switch {
		case n == "":
			continue
		case !ok:
			pe.Missing = append(pe.Missing, n)
		case p.ReadOnly:
			pe.ReadOnly = append(pe.ReadOnly, n)
		}
	}
	if slices.Contains(names, propLifecycleStage) {
		pe.Problems = append(pe.Problems, "lifecyclestage is set from the campaign's action and cannot be mapped")
	}
	if slices.Contains(names, c.cfg.MarkerProperty) {
		pe.Problems = append(pe.Problems, fmt.Sprintf("%s is the marker property and cannot be mapped", c.cfg.MarkerProperty))
	}
	if p, ok := byName[c.cfg.ExternalIDProperty]; ok && !p.Unique {
		pe.Problems = append(pe.Problems, fmt.Sprintf("external id property %s does not have unique values (hasUniqueValue), so contacts cannot be looked up by it", p.Name))
	}
	if p, ok := byName[propLifecycleStage]; ok && len(p.Options) > 0 {
		for _, s := range []struct{ kind, v string }{{"lead", c.cfg.LeadStage}, {"user", c.cfg.UserStage}} {
			if !slices.Contains(p.Options, s.v) {
				pe.Problems = append(pe.Problems, fmt.Sprintf("the %s stage %q is not an option of lifecyclestage (options: %s)", s.kind, s.v, strings.Join(p.Options, ", ")))
			}
		}
	}
	if len(pe.Missing) == 0 && len(pe.ReadOnly) == 0 && len(pe.Problems) == 0 {
		return nil
	}
	return c.fail(&ports.Error{Op: OpCheckProperties, Kind: ports.Permanent, Message: pe.Error(), Err: pe})
}

// EnsureMarker creates the marker property (a text property in the
// contact information group) when the account lacks it, and reports
// whether it did. Creating needs the scope crm.schemas.contacts.write; a
// token without it gets Unauthorized, and the property can be created in
// HubSpot's settings instead.
func (c *Client) EnsureMarker(ctx context.Context) (created bool, err error) {
	props, err := c.properties(ctx)
	if err != nil {
		return false, c.fail(err)
	}
	if slices.ContainsFunc(props, func(p Property) bool { return p.Name == c.cfg.MarkerProperty && !p.Archived }) {
		return false, nil
	}
	err = c.CreateProperty(ctx, c.cfg.MarkerProperty, "Referrer sync event id",
		"Set by referrer-sync: the id of the referrer.joined event that created this contact.", false)
	return err == nil, err
}

// CreateProperty creates a custom text contact property with POST
// …/properties/contacts, in the contact information group; unique makes
// its values unique (hasUniqueValue, which cannot be changed later). It is
// idempotent: when HubSpot refuses, the refusal is checked against the
// property list, and an existing text property of that name is success.
func (c *Client) CreateProperty(ctx context.Context, name, label, description string, unique bool) error {
	if !propertyNameRE.MatchString(name) {
		return c.fail(&ports.Error{Op: OpCreateProperty, Kind: ports.Permanent,
			Message: fmt.Sprintf("%q is not a property's internal name (a lower-case letter, then lower-case letters, digits, '_')", name)})
	}
	if label == "" {
		label = name
	}
	body := struct {
		Name           string `json:"name"`
		Label          string `json:"label"`
		Type           string `json:"type"`
		FieldType      string `json:"fieldType"`
		GroupName      string `json:"groupName"`
		Description    string `json:"description,omitempty"`
		HasUniqueValue bool   `json:"hasUniqueValue,omitempty"`
	}{name, label, "string", "text", "contactinformation", description, unique}
	data, err := json.Marshal(body)
	if err != nil {
		return c.fail(&ports.Error{Op: OpCreateProperty, Kind: ports.Permanent, Err: err})
	}
	res, err := c.send(ctx, call{op: OpCreateProperty, method: http.MethodPost, path: c.cfg.propertiesPath(), body: data, policy: repeatable})
	if err != nil {
		return c.fail(err)
	}
	if res.status == http.StatusCreated || res.status == http.StatusOK {
		return nil
	}
	refusal := c.adminError(OpCreateProperty, res)
	if refusal.Kind != ports.Permanent {
		return c.fail(refusal)
	}
	// The wording of "exists" is not documented; the list decides.
	props, err := c.properties(ctx)
	if err != nil {
		return c.fail(errors.Join(err, refusal))
	}
	for _, p := range props {
		if p.Name != name || p.Archived {
			continue
		}
		if p.Type != "string" {
			return c.fail(&ports.Error{Op: OpCreateProperty, Kind: ports.Permanent,
				Message: fmt.Sprintf("property %q exists with type %q, not string", name, p.Type)})
		}
		if unique && !p.Unique {
			return c.fail(&ports.Error{Op: OpCreateProperty, Kind: ports.Permanent,
				Message: fmt.Sprintf("property %q exists without unique values", name)})
		}
		return nil
	}
	return c.fail(refusal)
}
