package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
)

// EventType is the CloudEvents type every message on the subject must carry.
const EventType = "referrer.joined"

// MaxEventSize is the largest message body accepted. A referrer event is a
// few hundred bytes; anything this large is a producer bug, and refusing it
// early keeps one bad producer from exhausting memory.
const MaxEventSize = 64 << 10

// Reasons an event is rejected. They are stable strings because they travel
// in dead-letter headers and metric labels, where operators match on them.
const (
	ReasonTooLarge        = "too_large"
	ReasonMalformed       = "malformed"
	ReasonWrongType       = "wrong_type"
	ReasonMissingID       = "missing_id"
	ReasonMissingCampaign = "missing_campaign"
	ReasonMissingEmail    = "missing_email"
	ReasonInvalidEmail    = "invalid_email"
	ReasonMapping         = "mapping"
)

// InvalidEventError says why an event can never be processed, however often
// it is retried. Callers branch on it to dead-letter instead of retrying.
type InvalidEventError struct {
	Reason string // one of the Reason constants
	Detail string
}

func (e *InvalidEventError) Error() string {
	if e.Detail == "" {
		return "invalid event: " + e.Reason
	}
	return "invalid event: " + e.Reason + ": " + e.Detail
}

func invalid(reason, format string, args ...any) error {
	return &InvalidEventError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ReferrerJoined is one validated referrer.joined event: someone signed up to
// a campaign for their own referral link.
type ReferrerJoined struct {
	ID           string // CloudEvents id: the idempotency key
	Source       string
	Time         time.Time // zero when the producer sent none
	CampaignID   string
	CampaignName string
	Referrer     Referrer
}

// Referrer is the person who joined. Email is already normalised (trimmed and
// lower-cased) so that every comparison and lookup agrees on one spelling.
type Referrer struct {
	ID         string
	FirstName  string
	Email      string
	Code       string
	URL        string
	Source     string
	SignedUpAt time.Time
	Meta       map[string]string // the campaign's own form fields
}

type envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

type payload struct {
	CampaignID   string `json:"campaign_id"`
	CampaignName string `json:"campaign_name"`
	Referrer     struct {
		ID         string                     `json:"id"`
		FirstName  string                     `json:"first_name"`
		Email      string                     `json:"email"`
		Code       string                     `json:"code"`
		URL        string                     `json:"url"`
		Source     string                     `json:"source"`
		SignedUpAt string                     `json:"signed_up_at"`
		Meta       map[string]json.RawMessage `json:"meta"`
	} `json:"referrer"`
}

// DecodeEvent turns a message into a ReferrerJoined. It accepts CloudEvents
// 1.0 in structured JSON mode (the body is the envelope) and in binary mode
// (attributes in "ce-" headers, the body is the data). Header names must be
// lower-case. Any error is an *InvalidEventError naming the reason; the
// event returned with it carries only the id and campaign id, read from
// whatever parts of the message parse (a wrong type or a bad email does not
// hide them; a body over MaxEventSize is not parsed, so only a binary-mode
// id is kept), so that dead letters, logs and labels still name the event.
func DecodeEvent(body []byte, headers map[string]string) (ReferrerJoined, error) {
	if len(body) > MaxEventSize {
		return ReferrerJoined{ID: strings.TrimSpace(headers["ce-id"])},
			invalid(ReasonTooLarge, "%d bytes exceeds the %d byte limit", len(body), MaxEventSize)
	}
	var env envelope
	if v, ok := headers["ce-specversion"]; ok {
		env = envelope{
			SpecVersion:     v,
			ID:              headers["ce-id"],
			Source:          headers["ce-source"],
			Type:            headers["ce-type"],
			Time:            headers["ce-time"],
			DataContentType: headers["content-type"],
			Data:            body,
		}
	} else if err := json.Unmarshal(body, &env); err != nil {
		id, campaign := looseIdentifiers(body)
		return ReferrerJoined{ID: id, CampaignID: campaign},
			invalid(ReasonMalformed, "body is not a CloudEvents JSON envelope: %v", err)
	}
	ev, err := fromEnvelope(env)
	if err != nil {
		// Keep what identifies the event, for dead-letter headers, logs
		// and labels; nothing else of a rejected event is trusted.
		return ReferrerJoined{ID: strings.TrimSpace(env.ID), CampaignID: looseCampaign(env.Data)}, err
	}
	return ev, nil
}

// looseIdentifiers reads the id and the data's campaign id of a structured
// event whose envelope does not decode (an attribute of the wrong JSON type,
// say): each is kept when it is itself a JSON string.
func looseIdentifiers(body []byte) (id, campaign string) {
	var env struct {
		ID   json.RawMessage `json:"id"`
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &env) != nil {
		return "", ""
	}
	return looseString(env.ID), looseCampaign(env.Data)
}

// looseCampaign reads data.campaign_id when it is a JSON string, whatever is
// wrong elsewhere in the data.
func looseCampaign(data json.RawMessage) string {
	var p struct {
		CampaignID json.RawMessage `json:"campaign_id"`
	}
	if json.Unmarshal(data, &p) != nil {
		return ""
	}
	return looseString(p.CampaignID)
}

func looseString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

func fromEnvelope(env envelope) (ReferrerJoined, error) {
	if env.SpecVersion != "1.0" {
		return ReferrerJoined{}, invalid(ReasonMalformed, "specversion %q is not 1.0", env.SpecVersion)
	}
	if env.Type != EventType {
		return ReferrerJoined{}, invalid(ReasonWrongType, "type %q is not %s", env.Type, EventType)
	}
	id := strings.TrimSpace(env.ID)
	if id == "" {
		return ReferrerJoined{}, invalid(ReasonMissingID, "id is empty")
	}
	if ct := env.DataContentType; ct != "" && !strings.HasPrefix(ct, "application/json") {
		return ReferrerJoined{}, invalid(ReasonMalformed, "datacontenttype %q is not application/json", ct)
	}
	ev := ReferrerJoined{ID: id, Source: env.Source}
	if env.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, env.Time)
		if err != nil {
			return ev, invalid(ReasonMalformed, "time %q is not RFC 3339", env.Time)
		}
		ev.Time = t.UTC()
	}
	data := bytes.TrimSpace(env.Data)
	if len(data) == 0 || data[0] != '{' {
		return ev, invalid(ReasonMalformed, "data is not a JSON object")
	}
	var p payload
	if err := json.Unmarshal(data, &p); err != nil {
		return ev, invalid(ReasonMalformed, "data: %v", err)
	}
	ev.CampaignID = strings.TrimSpace(p.CampaignID)
	ev.CampaignName = p.CampaignName
	r := p.Referrer
	ev.Referrer = Referrer{ID: r.ID, FirstName: r.FirstName, Code: r.Code, URL: r.URL, Source: r.Source}
	if r.SignedUpAt != "" {
		t, err := time.Parse(time.RFC3339Nano, r.SignedUpAt)
		if err != nil {
			return ev, invalid(ReasonMalformed, "referrer.signed_up_at %q is not RFC 3339", r.SignedUpAt)
		}
		ev.Referrer.SignedUpAt = t.UTC()
	}
	if len(r.Meta) > 0 {
		ev.Referrer.Meta = make(map[string]string, len(r.Meta))
		for k, raw := range r.Meta {
			v, err := scalarString(raw)
			if err != nil {
				return ev, invalid(ReasonMalformed, "referrer.meta.%s: %v", k, err)
			}
			ev.Referrer.Meta[k] = v
		}
	}
	if ev.CampaignID == "" {
		return ev, invalid(ReasonMissingCampaign, "data.campaign_id is empty")
	}
	email, err := NormalizeEmail(r.Email)
	if err != nil {
		return ev, err
	}
	ev.Referrer.Email = email
	return ev, nil
}

// scalarString accepts the campaign form fields as strings, and also numbers
// and booleans (as their JSON text), because form builders are loose about
// types; objects and arrays have no sensible CRM field and are rejected.
func scalarString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", errors.New("empty value")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '{', '[':
		return "", errors.New("objects and arrays are not supported, only strings")
	case 'n':
		return "", nil
	default:
		return string(raw), nil
	}
}

// NormalizeEmail trims and lower-cases an address and checks that it is a
// plain addr-spec with a dotted domain. Lookups in CRMs are case-sensitive or
// undocumented, so one canonical spelling is what keeps one person one
// contact.
func NormalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	if e == "" {
		return "", invalid(ReasonMissingEmail, "referrer.email is empty")
	}
	addr, err := mail.ParseAddress(e)
	if err != nil || addr.Address != e || addr.Name != "" {
		return "", invalid(ReasonInvalidEmail, "referrer.email is not a valid address")
	}
	at := strings.LastIndexByte(e, '@')
	domain := e[at+1:]
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.ContainsAny(e, " \t\r\n") {
		return "", invalid(ReasonInvalidEmail, "referrer.email is not a valid address")
	}
	return e, nil
}
