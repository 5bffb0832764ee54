package domain_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/referrer-sync/referrer-sync/domain"
)

func TestIdentityKey(t *testing.T) {
	tests := []struct {
		name string
		id   domain.Identity
		want string
	}{
		{name: "email", id: domain.Identity{Email: "ada@example.com"}, want: "email:ada@example.com"},
		{name: "external id wins", id: domain.Identity{Email: "ada@example.com", ExternalID: "usr_8812"}, want: "xid:usr_8812"},
		{name: "external id alone", id: domain.Identity{ExternalID: "usr_8812"}, want: "xid:usr_8812"},
		{name: "an email that looks like an id", id: domain.Identity{Email: "usr_8812"}, want: "email:usr_8812"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.Key(); got != tt.want {
				t.Errorf("Key(): got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIdentityOf(t *testing.T) {
	c := domain.Contact{Role: domain.RoleUser, Email: "ada@example.com", ExternalID: "usr_8812", Name: "Ada"}
	want := domain.Identity{Email: "ada@example.com", ExternalID: "usr_8812"}
	if got := domain.IdentityOf(c); got != want {
		t.Errorf("IdentityOf: got %+v, want %+v", got, want)
	}
}

// permutations returns every ordering of ms.
func permutations(ms []domain.Match) [][]domain.Match {
	if len(ms) <= 1 {
		return [][]domain.Match{slices.Clone(ms)}
	}
	var out [][]domain.Match
	for i := range ms {
		rest := slices.Concat(ms[:i:i], ms[i+1:])
		for _, p := range permutations(rest) {
			out = append(out, append([]domain.Match{ms[i]}, p...))
		}
	}
	return out
}

func TestPickMatch(t *testing.T) {
	byEmail := domain.Identity{Email: "ada@example.com"}
	byXID := domain.Identity{Email: "ada@example.com", ExternalID: "usr_8812"}
	oldLead := domain.Match{ID: "l1", Role: domain.RoleLead, Email: "ada@example.com", CreatedAt: 100}
	newLead := domain.Match{ID: "l2", Role: domain.RoleLead, Email: "ada@example.com", CreatedAt: 200}
	oldUser := domain.Match{ID: "u1", Role: domain.RoleUser, Email: "ada@example.com", CreatedAt: 300}
	newUser := domain.Match{ID: "u2", Role: domain.RoleUser, Email: "ada@example.com", CreatedAt: 400}
	xidLead := domain.Match{ID: "l9", Role: domain.RoleLead, Email: "ada@example.com", ExternalID: "usr_8812", CreatedAt: 900}
	xidUser := domain.Match{ID: "u9", Role: domain.RoleUser, ExternalID: "usr_8812", CreatedAt: 950}
	otherXIDUser := domain.Match{ID: "u0", Role: domain.RoleUser, Email: "ada@example.com", ExternalID: "usr_0001", CreatedAt: 1}
	twinA := domain.Match{ID: "a1", Role: domain.RoleUser, CreatedAt: 500}
	twinB := domain.Match{ID: "b1", Role: domain.RoleUser, CreatedAt: 500}
	tests := []struct {
		name          string
		id            domain.Identity
		matches       []domain.Match
		want          domain.Match
		wantFound     bool
		wantAmbiguous bool
	}{
		{name: "no matches", id: byEmail},
		{name: "one lead", id: byEmail, matches: []domain.Match{newLead}, want: newLead, wantFound: true},
		{name: "the same contact twice is not ambiguous", id: byEmail, matches: []domain.Match{newLead, newLead}, want: newLead, wantFound: true},
		{name: "oldest lead", id: byEmail, matches: []domain.Match{newLead, oldLead}, want: oldLead, wantFound: true, wantAmbiguous: true},
		{name: "user before an older lead", id: byEmail, matches: []domain.Match{oldLead, newUser}, want: newUser, wantFound: true, wantAmbiguous: true},
		{name: "oldest user", id: byEmail, matches: []domain.Match{oldLead, newLead, newUser, oldUser}, want: oldUser, wantFound: true, wantAmbiguous: true},
		{name: "smallest id on equal age", id: byEmail, matches: []domain.Match{twinB, twinA}, want: twinA, wantFound: true, wantAmbiguous: true},
		{name: "external id match before a user", id: byXID, matches: []domain.Match{oldUser, xidLead}, want: xidLead, wantFound: true, wantAmbiguous: true},
		{name: "external id match before an older user with another external id", id: byXID, matches: []domain.Match{otherXIDUser, xidLead}, want: xidLead, wantFound: true, wantAmbiguous: true},
		{name: "external id user before external id lead", id: byXID, matches: []domain.Match{xidLead, oldUser, xidUser}, want: xidUser, wantFound: true, wantAmbiguous: true},
		{name: "no external id wanted: a contact's own external id does not count", id: byEmail, matches: []domain.Match{xidUser, oldUser}, want: oldUser, wantFound: true, wantAmbiguous: true},
		{name: "no external id matches: user before lead, then oldest", id: byXID, matches: []domain.Match{oldLead, newUser, oldUser}, want: oldUser, wantFound: true, wantAmbiguous: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Replicas and retries see search results in any order; the
			// pick must not depend on it.
			for _, order := range permutations(tt.matches) {
				got, found, ambiguous := domain.PickMatch(tt.id, order)
				if !reflect.DeepEqual(got, tt.want) || found != tt.wantFound || ambiguous != tt.wantAmbiguous {
					t.Errorf("PickMatch(%v): got %+v, found %v, ambiguous %v, want %+v, %v, %v",
						order, got, found, ambiguous, tt.want, tt.wantFound, tt.wantAmbiguous)
				}
			}
		})
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		action domain.Action
		policy domain.OnDuplicate
		found  bool
		want   domain.Decision
	}{
		{domain.ActionNothing, domain.OnDuplicateUpdate, false, domain.DecideNothing},
		{domain.ActionNothing, domain.OnDuplicateUpdate, true, domain.DecideNothing},
		{domain.ActionNothing, domain.OnDuplicateSkip, true, domain.DecideNothing},
		{domain.ActionCreateLead, domain.OnDuplicateSkip, false, domain.DecideCreate},
		{domain.ActionCreateLead, domain.OnDuplicateSkip, true, domain.DecideSkip},
		{domain.ActionCreateLead, domain.OnDuplicateUpdate, false, domain.DecideCreate},
		{domain.ActionCreateLead, domain.OnDuplicateUpdate, true, domain.DecideUpdate},
		{domain.ActionCreateUser, domain.OnDuplicateSkip, false, domain.DecideCreate},
		{domain.ActionCreateUser, domain.OnDuplicateSkip, true, domain.DecideSkip},
		{domain.ActionCreateUser, domain.OnDuplicateUpdate, false, domain.DecideCreate},
		{domain.ActionCreateUser, domain.OnDuplicateUpdate, true, domain.DecideUpdate},
		// An unset policy must never overwrite a contact.
		{domain.ActionCreateUser, "", true, domain.DecideSkip},
	}
	for _, tt := range tests {
		name := string(tt.action) + "/" + string(tt.policy) + "/found=" + map[bool]string{true: "yes", false: "no"}[tt.found]
		t.Run(name, func(t *testing.T) {
			c := domain.Campaign{Connection: "intercom", Action: tt.action, OnDuplicate: tt.policy}
			if got := domain.Decide(c, tt.found); got != tt.want {
				t.Errorf("Decide: got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestContactForUpdate(t *testing.T) {
	tests := []struct {
		name string
		in   domain.Contact
		want domain.Contact
	}{
		{
			name: "user",
			in: domain.Contact{
				Role: domain.RoleUser, Email: "ada@example.com", ExternalID: "usr_8812", Name: "Ada", Phone: "+44",
				Avatar: "https://cdn/a.png", OwnerID: "42", SignedUpAt: 1, LastSeenAt: 2, Unsubscribed: ptr(true),
				Custom: map[string]any{"code": "ADA-7Q2"},
			},
			want: domain.Contact{
				Email: "ada@example.com", ExternalID: "usr_8812", Name: "Ada", Phone: "+44",
				Avatar: "https://cdn/a.png", OwnerID: "42", SignedUpAt: 1, LastSeenAt: 2, Unsubscribed: ptr(true),
				Custom: map[string]any{"code": "ADA-7Q2"},
			},
		},
		{name: "lead", in: domain.Contact{Role: domain.RoleLead, Email: "ada@example.com"}, want: domain.Contact{Email: "ada@example.com"}},
		{name: "no role", in: domain.Contact{Email: "ada@example.com"}, want: domain.Contact{Email: "ada@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role := tt.in.Role
			got := tt.in.ForUpdate()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ForUpdate:\n got %s\nwant %s", describe(got), describe(tt.want))
			}
			if tt.in.Role != role {
				t.Errorf("receiver's role: got %q, want %q (unchanged)", tt.in.Role, role)
			}
		})
	}
}
