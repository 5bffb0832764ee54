package domain

import (
	"cmp"
	"slices"
)

// Identity is what identifies a person in a CRM: the normalised email, and
// the external id when the campaign maps one (users only).
type Identity struct {
	Email      string
	ExternalID string
	// Marker, when set, also finds the contact whose marker attribute
	// holds this value (see Contact.Marker).
	Marker string
}

// IdentityOf returns the identity a contact would be matched by.
func IdentityOf(c Contact) Identity {
	return Identity{Email: c.Email, ExternalID: c.ExternalID}
}

// Key is a stable string for the person, used to serialise work on one
// person and to remember their contact id. External ids win over emails
// because they are what the CRM itself treats as unique.
func (i Identity) Key() string {
	if i.ExternalID != "" {
		return "xid:" + i.ExternalID
	}
	return "email:" + i.Email
}

// Match is an existing CRM contact that matched an identity.
type Match struct {
	ID         string
	Role       Role
	Email      string
	ExternalID string
	CreatedAt  int64  // Unix seconds
	Marker     string // the marker attribute's value, if the contact has one
}

// PickMatch chooses deterministically among contacts that match: a contact
// with the wanted external id first, then users before leads, then the
// oldest, then the smallest id. Determinism matters because replicas and
// retries must all update the same contact. ambiguous reports whether there
// was more than one candidate, which callers log.
func PickMatch(id Identity, matches []Match) (m Match, found, ambiguous bool) {
	if len(matches) == 0 {
		return Match{}, false, false
	}
	rank := func(m Match) int {
		r := 0
		if id.ExternalID != "" && m.ExternalID != id.ExternalID {
			r += 2
		}
		if m.Role != RoleUser {
			r++
		}
		return r
	}
	best := slices.MinFunc(matches, func(a, b Match) int {
		return cmp.Or(
			cmp.Compare(rank(a), rank(b)),
			cmp.Compare(a.CreatedAt, b.CreatedAt),
			cmp.Compare(a.ID, b.ID),
		)
	})
	distinct := 0
	seen := map[string]bool{}
	for _, m := range matches {
		if !seen[m.ID] {
			seen[m.ID] = true
			distinct++
		}
	}
	return best, true, distinct > 1
}

// Decision is what to do about one event once existing contacts are known.
type Decision string

// Decisions.
const (
	DecideNothing Decision = "nothing" // the campaign's action is "nothing"
	DecideCreate  Decision = "create"  // no matching contact
	DecideSkip    Decision = "skip"    // a match exists and the policy is skip
	DecideUpdate  Decision = "update"  // a match exists and the policy is update
)

// Decide applies the campaign's action and duplicate policy.
func Decide(c Campaign, matchFound bool) Decision {
	switch {
	case c.Action == ActionNothing:
		return DecideNothing
	case !matchFound:
		return DecideCreate
	case c.OnDuplicate == OnDuplicateUpdate:
		return DecideUpdate
	default:
		return DecideSkip
	}
}

// ForUpdate returns the contact as an update must send it: the mapped
// fields without the role, which an update never changes, and without the
// marker, which belongs to the create that made the contact.
func (c Contact) ForUpdate() Contact {
	c.Role, c.Marker = "", ""
	return c
}

// Outcome is how the processing of one message ended. Every message ends in
// exactly one outcome, and each is counted.
type Outcome string

// Outcomes.
const (
	OutcomeCreated      Outcome = "created"
	OutcomeUpdated      Outcome = "updated"
	OutcomeSkipped      Outcome = "skipped"      // a match existed and the policy is skip
	OutcomeNothing      Outcome = "nothing"      // the campaign's action is nothing
	OutcomeDuplicate    Outcome = "duplicate"    // already applied: absorbed by the ledger
	OutcomeUnconfigured Outcome = "unconfigured" // no settings for the campaign
	OutcomeDeadLettered Outcome = "dead_lettered"
)
