package domain

import (
	"fmt"
	"regexp"
	"strings"
)

// ContactField is a field of Contact that a mapping target sets. Every
// CRM connection type spells its targets its own way; what they set is
// this neutral list, so the use case and the adapters share one Contact.
type ContactField string

// The contact fields a target can set. FieldCustom is Contact.Custom, under
// the name the target gives.
const (
	FieldEmail        ContactField = "email"
	FieldName         ContactField = "name"
	FieldPhone        ContactField = "phone"
	FieldExternalID   ContactField = "external_id"
	FieldAvatar       ContactField = "avatar"
	FieldOwnerID      ContactField = "owner_id"
	FieldSignedUpAt   ContactField = "signed_up_at"
	FieldLastSeenAt   ContactField = "last_seen_at"
	FieldUnsubscribed ContactField = "unsubscribed_from_emails"
	FieldCustom       ContactField = "custom"
)

// Targets is the vocabulary of mapping targets one kind of CRM connection
// accepts: which names set which contact field, how custom fields are
// named, and which names are refused and why. The domain holds no CRM's
// vocabulary but the standard one; whoever knows a connection's type (the
// configuration) passes its Targets in Campaign.Targets, so validation and
// MapContact agree on what a target means. A Targets is read-only once
// built: campaigns share it.
type Targets struct {
	// Fields maps each standard target name to the field it sets.
	Fields map[string]ContactField
	// CustomPrefix, when set, starts every custom target (Intercom's
	// "custom_attributes."); the rest is the custom field's name. When
	// empty, any other name that CustomName matches is a custom field.
	CustomPrefix string
	// CustomName matches valid custom field names; CustomMaxLen, when
	// positive, bounds their length in bytes.
	CustomName   *regexp.Regexp
	CustomMaxLen int
	// CustomNoun describes a custom field in messages ("custom attribute
	// name", "property name").
	CustomNoun string
	// Hint, when set, follows "is not a known target" to say what the
	// connection type accepts.
	Hint string
	// Refused are names that look valid but may not be mapped on this
	// connection, each with the reason.
	Refused map[string]string
}

// standardTargets is the vocabulary of the Target constants: Intercom's
// contact fields and custom attributes under TargetCustomPrefix.
var standardTargets = &Targets{
	Fields: map[string]ContactField{
		TargetEmail:        FieldEmail,
		TargetName:         FieldName,
		TargetPhone:        FieldPhone,
		TargetExternalID:   FieldExternalID,
		TargetAvatar:       FieldAvatar,
		TargetOwnerID:      FieldOwnerID,
		TargetSignedUpAt:   FieldSignedUpAt,
		TargetLastSeenAt:   FieldLastSeenAt,
		TargetUnsubscribed: FieldUnsubscribed,
	},
	CustomPrefix: TargetCustomPrefix,
	CustomName:   regexp.MustCompile(`^[^. \t]+$`),
	CustomMaxLen: maxCustomAttributeName,
	CustomNoun:   "custom attribute name",
}

// StandardTargets returns the vocabulary of the Target constants (email,
// name, phone, external_id, avatar, owner_id, signed_up_at, last_seen_at,
// unsubscribed_from_emails, and custom_attributes.<name>), which Intercom
// connections use and a Campaign without Targets gets. Each call returns a
// new value, free to change.
func StandardTargets() *Targets {
	t := *standardTargets
	t.Fields = make(map[string]ContactField, len(standardTargets.Fields))
	for k, v := range standardTargets.Fields {
		t.Fields[k] = v
	}
	return &t
}

// resolve returns the field a target sets and, for FieldCustom, the custom
// field's name; an error says why the target is not accepted.
func (t *Targets) resolve(to string) (ContactField, string, error) {
	if t == nil {
		t = standardTargets
	}
	if reason, ok := t.Refused[to]; ok {
		return "", "", fmt.Errorf("to %q cannot be mapped: %s", to, reason)
	}
	if f, ok := t.Fields[to]; ok {
		return f, "", nil
	}
	name := to
	if t.CustomPrefix != "" {
		var ok bool
		if name, ok = strings.CutPrefix(to, t.CustomPrefix); !ok {
			return "", "", t.unknown(to)
		}
	}
	valid := name != "" && (t.CustomMaxLen <= 0 || len(name) <= t.CustomMaxLen) && (t.CustomName == nil || t.CustomName.MatchString(name))
	switch {
	case valid:
		return FieldCustom, name, nil
	case t.CustomPrefix != "":
		return "", "", fmt.Errorf("to %q is not a valid %s", to, t.CustomNoun)
	}
	return "", "", t.unknown(to)
}

func (t *Targets) unknown(to string) error {
	if t.Hint != "" {
		return fmt.Errorf("to %q is not a known target: %s", to, t.Hint)
	}
	return fmt.Errorf("to %q is not a known target", to)
}
