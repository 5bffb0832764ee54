package domain

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sources a field can be mapped from.
const (
	SourceReferrerID         = "referrer.id"
	SourceReferrerFirstName  = "referrer.first_name"
	SourceReferrerEmail      = "referrer.email"
	SourceReferrerCode       = "referrer.code"
	SourceReferrerURL        = "referrer.url"
	SourceReferrerSource     = "referrer.source"
	SourceReferrerSignedUpAt = "referrer.signed_up_at"
	SourceCampaignID         = "campaign_id"
	SourceCampaignName       = "campaign_name"
	SourceEventID            = "event.id"
	SourceEventTime          = "event.time"
	SourceMetaPrefix         = "referrer.meta."
)

// Targets a field can be mapped to in the standard vocabulary (see
// StandardTargets): Intercom's contact fields, plus custom attributes under
// TargetCustomPrefix. Other connection types bring their own (Targets).
const (
	TargetEmail            = "email"
	TargetName             = "name"
	TargetPhone            = "phone"
	TargetExternalID       = "external_id"
	TargetAvatar           = "avatar"
	TargetSignedUpAt       = "signed_up_at"
	TargetLastSeenAt       = "last_seen_at"
	TargetOwnerID          = "owner_id"
	TargetUnsubscribed     = "unsubscribed_from_emails"
	TargetCustomPrefix     = "custom_attributes."
	maxCustomAttributeName = 190
)

var timeSources = map[string]bool{SourceReferrerSignedUpAt: true, SourceEventTime: true}

// Field maps one referrer value to one contact field. Exactly one of From
// (a source path) and Value (a fixed string, bool, integer or float) is set.
type Field struct {
	From  string
	Value any
	To    string
}

func knownSource(s string) bool {
	switch s {
	case SourceReferrerID, SourceReferrerFirstName, SourceReferrerEmail, SourceReferrerCode,
		SourceReferrerURL, SourceReferrerSource, SourceReferrerSignedUpAt, SourceCampaignID,
		SourceCampaignName, SourceEventID, SourceEventTime:
		return true
	}
	return strings.HasPrefix(s, SourceMetaPrefix) && len(s) > len(SourceMetaPrefix)
}

func (f Field) problems(role Role, targets *Targets) []error {
	var errs []error
	switch {
	case f.From == "" && f.Value == nil:
		errs = append(errs, errors.New("one of from or value is required"))
	case f.From != "" && f.Value != nil:
		errs = append(errs, errors.New("from and value are mutually exclusive"))
	case f.From != "" && !knownSource(f.From):
		errs = append(errs, fmt.Errorf("from %q is not a known source", f.From))
	}
	if f.Value != nil {
		switch f.Value.(type) {
		case string, bool, int, int64, float64:
		default:
			errs = append(errs, fmt.Errorf("value must be a string, boolean or number, not %T", f.Value))
		}
	}
	to := f.To
	if to == "" {
		return append(errs, errors.New("to is required"))
	}
	field, _, err := targets.resolve(to)
	switch field {
	case "":
		errs = append(errs, err)
	case FieldExternalID:
		if role != RoleUser {
			errs = append(errs, fmt.Errorf("%s can only be mapped for create_user", to))
		}
	case FieldEmail:
		if f.From != SourceReferrerEmail {
			errs = append(errs, fmt.Errorf("%s must be mapped from referrer.email", to))
		}
	case FieldSignedUpAt, FieldLastSeenAt:
		if f.From != "" && !timeSources[f.From] {
			errs = append(errs, fmt.Errorf("%s needs a time source (referrer.signed_up_at or event.time)", to))
		}
		if _, err := unixValue(f.Value); f.Value != nil && err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", to, err))
		}
	case FieldUnsubscribed:
		if _, err := boolValue(f.Value); f.Value != nil && err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", to, err))
		}
	default:
		// The name, phone, avatar, owner and custom attributes take any
		// source and any value.
	}
	return errs
}

// Contact is the CRM-neutral description of the contact a campaign wants.
// Zero values mean "not mapped": an update sends only what is set.
type Contact struct {
	Role         Role // empty on updates: an update never changes the role
	Email        string
	ExternalID   string
	Name         string
	Phone        string
	Avatar       string
	OwnerID      string
	SignedUpAt   int64 // Unix seconds; 0 = not mapped
	LastSeenAt   int64
	Unsubscribed *bool
	Custom       map[string]any // string, bool, int64 or float64 values
	// Marker, when set on a create, is stored by the CRM adapter in a
	// marker attribute so that a create whose outcome was lost can be
	// found again. The application sets it to the creating event's id.
	Marker string
}

// MapContact applies a campaign's field mapping to an event. The result has
// the action's role; errors are *InvalidEventError with ReasonMapping (for
// example a meta value that cannot be read as a boolean), which no retry fixes.
func MapContact(c Campaign, ev ReferrerJoined) (Contact, error) {
	out := Contact{Role: c.Action.Role()}
	for _, f := range c.Fields {
		v, err := f.resolve(ev)
		if err != nil {
			return Contact{}, invalid(ReasonMapping, "%s: %v", f.To, err)
		}
		if v == nil {
			continue // an empty source leaves the field unmapped rather than blanking it
		}
		if err := out.set(c.Targets, f.To, v); err != nil {
			return Contact{}, invalid(ReasonMapping, "%s: %v", f.To, err)
		}
	}
	return out, nil
}

// resolve returns the field's value: string, bool, int64, float64,
// time.Time, or nil when the source is empty.
func (f Field) resolve(ev ReferrerJoined) (any, error) {
	if f.From == "" {
		if i, ok := f.Value.(int); ok {
			return int64(i), nil
		}
		return f.Value, nil
	}
	var s string
	switch f.From {
	case SourceReferrerSignedUpAt, SourceEventTime:
		t := ev.Referrer.SignedUpAt
		if f.From == SourceEventTime {
			t = ev.Time
		}
		if t.IsZero() {
			return nil, nil
		}
		return t, nil
	case SourceReferrerID:
		s = ev.Referrer.ID
	case SourceReferrerFirstName:
		s = ev.Referrer.FirstName
	case SourceReferrerEmail:
		s = ev.Referrer.Email
	case SourceReferrerCode:
		s = ev.Referrer.Code
	case SourceReferrerURL:
		s = ev.Referrer.URL
	case SourceReferrerSource:
		s = ev.Referrer.Source
	case SourceCampaignID:
		s = ev.CampaignID
	case SourceCampaignName:
		s = ev.CampaignName
	case SourceEventID:
		s = ev.ID
	default:
		if !strings.HasPrefix(f.From, SourceMetaPrefix) {
			return nil, fmt.Errorf("unknown source %q", f.From)
		}
		s = ev.Referrer.Meta[strings.TrimPrefix(f.From, SourceMetaPrefix)]
	}
	if s == "" {
		return nil, nil
	}
	return s, nil
}

func (c *Contact) set(targets *Targets, to string, v any) error {
	field, name, err := targets.resolve(to)
	if err != nil {
		return err
	}
	switch field {
	case FieldEmail:
		e, err := NormalizeEmail(stringValue(v))
		if err != nil {
			return err
		}
		c.Email = e
	case FieldName:
		c.Name = stringValue(v)
	case FieldPhone:
		c.Phone = stringValue(v)
	case FieldExternalID:
		c.ExternalID = stringValue(v)
	case FieldAvatar:
		c.Avatar = stringValue(v)
	case FieldOwnerID:
		c.OwnerID = stringValue(v)
	case FieldSignedUpAt, FieldLastSeenAt:
		u, err := unixValue(v)
		if err != nil {
			return err
		}
		if field == FieldSignedUpAt {
			c.SignedUpAt = u
		} else {
			c.LastSeenAt = u
		}
	case FieldUnsubscribed:
		b, err := boolValue(v)
		if err != nil {
			return err
		}
		c.Unsubscribed = &b
	case FieldCustom:
		if c.Custom == nil {
			c.Custom = map[string]any{}
		}
		if t, ok := v.(time.Time); ok {
			v = t.Unix() // times become Unix seconds everywhere
		}
		c.Custom[name] = v
	default:
		return fmt.Errorf("target %q sets an unknown contact field %q", to, field)
	}
	return nil
}

func stringValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10)
	default:
		return fmt.Sprint(x)
	}
}

func unixValue(v any) (int64, error) {
	switch x := v.(type) {
	case time.Time:
		return x.Unix(), nil
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	case string:
		t, err := time.Parse(time.RFC3339, x)
		if err != nil {
			return 0, fmt.Errorf("%q is not an RFC 3339 time", x)
		}
		return t.Unix(), nil
	}
	return 0, fmt.Errorf("%v is not a time", v)
}

func boolValue(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("%q is not a boolean", x)
		}
		return b, nil
	}
	return false, fmt.Errorf("%v is not a boolean", v)
}
