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

// Targets a field can be mapped to: the CRM's standard contact fields, plus
// custom attributes under TargetCustomPrefix.
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

func (f Field) problems(role Role) []error {
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
	switch to := f.To; {
	case to == "":
		errs = append(errs, errors.New("to is required"))
	case to == TargetExternalID && role != RoleUser:
		errs = append(errs, errors.New("external_id can only be mapped for create_user"))
	case to == TargetEmail:
		if f.From != SourceReferrerEmail {
			errs = append(errs, errors.New("email must be mapped from referrer.email"))
		}
	case to == TargetSignedUpAt || to == TargetLastSeenAt:
		if f.From != "" && !timeSources[f.From] {
			errs = append(errs, fmt.Errorf("%s needs a time source (referrer.signed_up_at or event.time)", to))
		}
		if _, err := unixValue(f.Value); f.Value != nil && err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", to, err))
		}
	case to == TargetUnsubscribed:
		if _, err := boolValue(f.Value); f.Value != nil && err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", to, err))
		}
	case strings.HasPrefix(to, TargetCustomPrefix):
		name := strings.TrimPrefix(to, TargetCustomPrefix)
		if name == "" || len(name) > maxCustomAttributeName || strings.ContainsAny(name, ". \t") {
			errs = append(errs, fmt.Errorf("to %q is not a valid custom attribute name", to))
		}
	case to == TargetName, to == TargetPhone, to == TargetAvatar, to == TargetOwnerID, to == TargetExternalID:
	default:
		errs = append(errs, fmt.Errorf("to %q is not a known target", to))
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
		if err := out.set(f.To, v); err != nil {
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

func (c *Contact) set(to string, v any) error {
	switch to {
	case TargetEmail, TargetName, TargetPhone, TargetExternalID, TargetAvatar, TargetOwnerID:
		s := stringValue(v)
		switch to {
		case TargetEmail:
			e, err := NormalizeEmail(s)
			if err != nil {
				return err
			}
			c.Email = e
		case TargetName:
			c.Name = s
		case TargetPhone:
			c.Phone = s
		case TargetExternalID:
			c.ExternalID = s
		case TargetAvatar:
			c.Avatar = s
		case TargetOwnerID:
			c.OwnerID = s
		}
	case TargetSignedUpAt, TargetLastSeenAt:
		u, err := unixValue(v)
		if err != nil {
			return err
		}
		if to == TargetSignedUpAt {
			c.SignedUpAt = u
		} else {
			c.LastSeenAt = u
		}
	case TargetUnsubscribed:
		b, err := boolValue(v)
		if err != nil {
			return err
		}
		c.Unsubscribed = &b
	default:
		name, ok := strings.CutPrefix(to, TargetCustomPrefix)
		if !ok {
			return fmt.Errorf("unknown target %q", to)
		}
		if c.Custom == nil {
			c.Custom = map[string]any{}
		}
		if t, ok := v.(time.Time); ok {
			v = t.Unix() // times become Unix seconds everywhere
		}
		c.Custom[name] = v
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
