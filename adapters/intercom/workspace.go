package intercom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/referrer-sync/referrer-sync/ports"
)

// Admin is the teammate a token acts as, and the workspace it belongs to,
// from GET /me. Start-up logs it so an operator sees which workspace a
// connection really reaches.
type Admin struct {
	ID            string
	Name          string
	Email         string
	WorkspaceID   string // the app's id_code
	WorkspaceName string
	Region        string // as Intercom reports it, e.g. "US"
}

// Me verifies the token with GET /me. A bad token is an Unauthorized error;
// calling this at start-up turns a misconfiguration into a failed deploy
// rather than a stream of dead letters.
func (c *Client) Me(ctx context.Context) (Admin, error) {
	res, err := c.send(ctx, call{op: OpMe, method: http.MethodGet, path: "/me", policy: repeatable})
	if err != nil {
		return Admin{}, c.fail(err)
	}
	if res.status != http.StatusOK {
		return Admin{}, c.fail(c.adminError(OpMe, res))
	}
	var me struct {
		ID    flexString `json:"id"`
		Name  string     `json:"name"`
		Email string     `json:"email"`
		App   *struct {
			IDCode string `json:"id_code"`
			Name   string `json:"name"`
			Region string `json:"region"`
		} `json:"app"`
	}
	if err := json.Unmarshal(res.body, &me); err != nil {
		return Admin{}, c.fail(&ports.Error{Op: OpMe, Kind: ports.Transient, Status: res.status, Err: fmt.Errorf("decode admin: %w", err)})
	}
	a := Admin{ID: string(me.ID), Name: me.Name, Email: me.Email}
	if me.App != nil {
		a.WorkspaceID, a.WorkspaceName, a.Region = me.App.IDCode, me.App.Name, me.App.Region
	}
	return a, nil
}

// adminError classifies failures of the workspace-level calls, for which
// 404 means a wrong base URL or an unsupported version, not a missing
// contact: Permanent, not NotFound.
func (c *Client) adminError(op string, res response) *ports.Error {
	pe := c.statusError(op, res)
	if pe.Kind == ports.NotFound {
		pe.Kind = ports.Permanent
	}
	return pe
}

// Attribute is a contact data attribute. Custom attributes must exist
// before a contact can carry them (Intercom rejects unknown names), so the
// campaign mapping is checked against this list at configuration time.
type Attribute struct {
	Name        string // key inside custom_attributes
	FullName    string // e.g. "custom_attributes.referral_link"
	Label       string
	Description string
	DataType    string // string, integer, float, boolean, date, ...
	Custom      bool
	APIWritable bool
	Archived    bool
}

// Attributes lists the contact data attributes with
// GET /data_attributes?model=contact.
func (c *Client) Attributes(ctx context.Context) ([]Attribute, error) {
	attrs, err := c.attributes(ctx)
	return attrs, c.fail(err)
}

func (c *Client) attributes(ctx context.Context) ([]Attribute, error) {
	res, err := c.send(ctx, call{op: OpListAttributes, method: http.MethodGet, path: "/data_attributes?model=contact", policy: repeatable})
	if err != nil {
		return nil, err
	}
	if res.status != http.StatusOK {
		return nil, c.adminError(OpListAttributes, res)
	}
	var list struct {
		Data []struct {
			Name        string `json:"name"`
			FullName    string `json:"full_name"`
			Label       string `json:"label"`
			Description string `json:"description"`
			DataType    string `json:"data_type"`
			Model       string `json:"model"`
			Custom      bool   `json:"custom"`
			APIWritable bool   `json:"api_writable"`
			Archived    bool   `json:"archived"`
		} `json:"data"`
	}
	if err := json.Unmarshal(res.body, &list); err != nil {
		return nil, &ports.Error{Op: OpListAttributes, Kind: ports.Transient, Status: res.status, Err: fmt.Errorf("decode data attributes: %w", err)}
	}
	out := make([]Attribute, 0, len(list.Data))
	for _, d := range list.Data {
		if d.Model != "" && d.Model != "contact" {
			continue
		}
		out = append(out, Attribute{Name: d.Name, FullName: d.FullName, Label: d.Label, Description: d.Description,
			DataType: d.DataType, Custom: d.Custom, APIWritable: d.APIWritable, Archived: d.Archived})
	}
	return out, nil
}

// attributeTypes are the data types CreateAttribute accepts. "options"
// (a list) is left out because it needs its options too.
var attributeTypes = map[string]bool{"string": true, "integer": true, "float": true, "boolean": true, "datetime": true, "date": true}

// CreateAttribute creates a custom contact attribute with POST
// /data_attributes. It is idempotent: when Intercom refuses because the
// attribute exists, the refusal is confirmed against the attribute list and
// treated as success, so start-up can call it on every boot. An existing
// attribute of another data type is a Permanent error, since values of the
// wanted type would be rejected.
func (c *Client) CreateAttribute(ctx context.Context, name, dataType, description string) error {
	var problems []string
	if strings.TrimSpace(name) == "" {
		problems = append(problems, "name is empty")
	}
	if !attributeTypes[dataType] {
		problems = append(problems, fmt.Sprintf("data type %q is not one of string, integer, float, boolean, datetime, date", dataType))
	}
	if len(problems) > 0 {
		return c.fail(&ports.Error{Op: OpCreateAttribute, Kind: ports.Permanent, Message: strings.Join(problems, "; ")})
	}
	body := struct {
		Name        string `json:"name"`
		Model       string `json:"model"`
		DataType    string `json:"data_type"`
		Description string `json:"description,omitempty"`
	}{name, "contact", dataType, description}
	data, err := marshalBody(OpCreateAttribute, body)
	if err != nil {
		return c.fail(err)
	}
	// Repeatable: sending it twice at worst provokes the "already exists"
	// answer handled below.
	res, err := c.send(ctx, call{op: OpCreateAttribute, method: http.MethodPost, path: "/data_attributes", body: data, policy: repeatable})
	if err != nil {
		return c.fail(err)
	}
	if res.status == http.StatusOK || res.status == http.StatusCreated {
		return nil
	}
	refusal := c.adminError(OpCreateAttribute, res)
	if refusal.Kind != ports.Permanent {
		return c.fail(refusal)
	}
	// Intercom answers a duplicate name with a 400 whose wording is not
	// specified (and also for a clash with a company attribute, which is a
	// real failure). The list is the authority.
	attrs, err := c.attributes(ctx)
	if err != nil {
		return c.fail(errors.Join(err, refusal)) // the list error decides: unknown is not permanent
	}
	for _, a := range attrs {
		if a.Name != name {
			continue
		}
		if !a.Custom {
			return c.fail(&ports.Error{Op: OpCreateAttribute, Kind: ports.Permanent,
				Message: fmt.Sprintf("%q is a standard attribute, not a custom one", name)})
		}
		if compatible := a.DataType == dataType || dataType == "datetime" && a.DataType == "date"; !compatible {
			return c.fail(&ports.Error{Op: OpCreateAttribute, Kind: ports.Permanent,
				Message: fmt.Sprintf("attribute %q exists with data type %q, not %q", name, a.DataType, dataType)})
		}
		if a.Archived {
			return c.fail(&ports.Error{Op: OpCreateAttribute, Kind: ports.Permanent,
				Message: fmt.Sprintf("attribute %q exists but is archived", name)})
		}
		return nil
	}
	return c.fail(refusal)
}
