package domain

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Action is what a campaign's operator chose to happen in the CRM when a
// referrer joins.
type Action string

// The actions offered on the campaign's CRM panel.
const (
	ActionNothing    Action = "nothing"
	ActionCreateLead Action = "create_lead"
	ActionCreateUser Action = "create_user"
)

// Role is the kind of CRM contact an action creates.
type Role string

// Contact roles. Intercom calls them the same; other CRMs map them.
const (
	RoleLead Role = "lead"
	RoleUser Role = "user"
)

// Role returns the role a create action produces, and "" for ActionNothing.
func (a Action) Role() Role {
	switch a {
	case ActionCreateLead:
		return RoleLead
	case ActionCreateUser:
		return RoleUser
	case ActionNothing:
	}
	return ""
}

func (a Action) valid() bool {
	switch a {
	case ActionNothing, ActionCreateLead, ActionCreateUser:
		return true
	}
	return false
}

// OnDuplicate is what to do when a matching contact already exists.
type OnDuplicate string

// Duplicate policies.
const (
	OnDuplicateSkip   OnDuplicate = "skip"
	OnDuplicateUpdate OnDuplicate = "update"
)

// Campaign holds one campaign's referrer settings.
type Campaign struct {
	Connection  string // name of the CRM connection the campaign writes to
	Action      Action
	OnDuplicate OnDuplicate
	Fields      []Field
	// Targets is the vocabulary of the connection's type, which the
	// fields' To names are read in; nil means StandardTargets.
	Targets *Targets
}

// Problems returns every configuration problem of the campaign, each prefixed
// with its path (e.g. "campaigns.camp_9.referrers.fields: email is not
// mapped"), so an operator can fix a file in one pass. connections lists the
// connection names that exist.
func (c Campaign) Problems(path string, connections []string) []error {
	var errs []error
	add := func(sub, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", path, sub, fmt.Sprintf(format, args...)))
	}
	if c.Connection == "" {
		if c.Action != ActionNothing {
			add(".connection", "is required")
		}
	} else if !contains(connections, c.Connection) {
		add(".connection", "%q is not a configured connection", c.Connection)
	}
	if !c.Action.valid() {
		add(".referrers.action", "%q is not one of nothing, create_lead, create_user", c.Action)
	}
	switch c.OnDuplicate {
	case OnDuplicateSkip, OnDuplicateUpdate:
	case "":
		if c.Action != ActionNothing {
			add(".referrers.on_duplicate", "is required (skip or update)")
		}
	default:
		add(".referrers.on_duplicate", "%q is not one of skip, update", c.OnDuplicate)
	}
	if c.Action == ActionNothing {
		return errs
	}
	emailMapped := false
	seen := map[string]int{}
	for i, f := range c.Fields {
		fp := fmt.Sprintf(".referrers.fields[%d]", i)
		for _, err := range f.problems(c.Action.Role(), c.Targets) {
			add(fp, "%v", err)
		}
		if prev, ok := seen[f.To]; ok && f.To != "" {
			add(fp, "target %q is already mapped by fields[%d]", f.To, prev)
		}
		seen[f.To] = i
		if field, _, err := c.Targets.resolve(f.To); err == nil && field == FieldEmail {
			emailMapped = true
		}
	}
	if !emailMapped {
		add(".referrers.fields", "email is not mapped")
	}
	return errs
}

// Warnings returns advice that does not stop the campaign from running.
func (c Campaign) Warnings(path string) []string {
	if c.Action == ActionNothing {
		return nil
	}
	for _, f := range c.Fields {
		if f.From == SourceReferrerURL {
			return nil
		}
	}
	return []string{path + ".referrers.fields: the referral link (referrer.url) is not mapped; map it to distribute referral links through the CRM"}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Catalog is the full set of campaign settings the service runs with. It is
// immutable once built, so a reload swaps a whole Catalog and every event
// sees exactly one version.
type Catalog struct {
	Campaigns map[string]Campaign
	Default   *Campaign // settings for campaigns not listed; nil = unconfigured
}

// Lookup returns the settings for a campaign, falling back to the default.
func (c *Catalog) Lookup(id string) (Campaign, bool) {
	if c == nil {
		return Campaign{}, false
	}
	if cp, ok := c.Campaigns[id]; ok {
		return cp, true
	}
	if c.Default != nil {
		return *c.Default, true
	}
	return Campaign{}, false
}

// Problems validates every campaign and the default against the named
// connections, returning all problems sorted by path.
func (c *Catalog) Problems(connections []string) []error {
	var errs []error
	ids := make([]string, 0, len(c.Campaigns))
	for id := range c.Campaigns {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if strings.TrimSpace(id) == "" {
			errs = append(errs, errors.New("campaigns: a campaign id is empty"))
		}
		errs = append(errs, c.Campaigns[id].Problems("campaigns."+id, connections)...)
	}
	if c.Default != nil {
		errs = append(errs, c.Default.Problems("default_campaign", connections)...)
	}
	return errs
}
