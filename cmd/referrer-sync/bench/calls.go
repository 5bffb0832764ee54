package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/intercom"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// Calls is what one kind of event costs in CRM requests, counted from the
// emulator's request log.
type Calls struct {
	Scenario   string
	Outcome    string
	Requests   int
	Operations string // the emulator's operation ids, in order
}

// Scenario names of Calls, in the order calls reports them.
const (
	ScenarioNewLead      = "new lead"
	ScenarioNewUser      = "new user with external_id"
	ScenarioDupSkip      = "duplicate + skip (contact exists in Intercom)"
	ScenarioDupUpdate    = "duplicate + update (contact exists in Intercom)"
	ScenarioKnownUpdate  = "person known to the ledger, update"
	ScenarioKnownSkip    = "person known to the ledger, skip"
	ScenarioRedelivered  = "event already applied (redelivery)"
	callsFirst           = 1_000_000
	callsPreexistingName = "created elsewhere"
)

// calls sends one event of each kind through app.Service, with the real
// ledger and the intercom adapter against a fresh emulator, and counts the
// requests each one made.
func (e *Env) calls(ctx context.Context) ([]Calls, error) {
	const conn = "main"
	em, err := startEmulator(emulator.Config{Seed: 1, Tokens: map[string]emulator.Workspace{
		tokenFor(conn): {ID: "ws_calls", Attributes: []string{attrLink, attrSource, attrCompany, markerAttr}},
	}})
	if err != nil {
		return nil, err
	}
	defer em.close()
	bucket := e.name("bench_calls")
	led, err := ledger.New(ctx, e.js, ledger.Config{Bucket: bucket})
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.js.DeleteKeyValue(dctx, bucket)
	}()
	cl, err := intercom.New(intercom.Config{Connection: conn, BaseURL: em.url, Token: tokenFor(conn), MarkerAttribute: markerAttr})
	if err != nil {
		return nil, err
	}
	svc, err := app.New(app.Config{
		Catalog: catalog(conn), CRMs: map[string]ports.CRM{conn: cl}, Ledger: led,
		DeadLetters: refuseDeadLetters{}, Metrics: metrics.New("bench"), Logger: serviceLogger(),
	})
	if err != nil {
		return nil, err
	}
	// A contact someone else created: in Intercom, unknown to the ledger.
	preexisting := func(person int) func() error {
		return func() error {
			_, err := cl.Create(ctx, domain.Contact{Role: domain.RoleLead, Name: callsPreexistingName,
				Email: fmt.Sprintf("referrer.%08d@example.com", person)})
			return err
		}
	}
	const (
		lead, user, dupSkip, dupUpdate = callsFirst + 1, callsFirst + 2, callsFirst + 3, callsFirst + 4
	)
	scenarios := []struct {
		name  string
		body  []byte
		setup func() error
	}{
		{ScenarioNewLead, render(lead, lead, campLeads), nil},
		{ScenarioNewUser, render(user, user, campUsers), nil},
		{ScenarioDupSkip, render(dupSkip, dupSkip, campUsers), preexisting(dupSkip)},
		{ScenarioDupUpdate, render(dupUpdate, dupUpdate, campLeads), preexisting(dupUpdate)},
		{ScenarioKnownUpdate, render(callsFirst+5, user, campLeads), nil},
		{ScenarioKnownSkip, render(callsFirst+6, lead, campUsers), nil},
		{ScenarioRedelivered, render(lead, lead, campLeads), nil},
	}
	var out []Calls
	for _, sc := range scenarios {
		if sc.setup != nil {
			if err := sc.setup(); err != nil {
				return nil, fmt.Errorf("%s: setup: %w", sc.name, err)
			}
		}
		before := len(em.Requests())
		v := svc.Handle(ctx, app.Message{Body: sc.body, Headers: map[string]string{}, Subject: mainSubject, Attempt: 1, Received: time.Now()})
		if v.Retry || v.Outcome == domain.OutcomeDeadLettered {
			return nil, fmt.Errorf("%s: verdict %+v", sc.name, v)
		}
		var ops []string
		for _, r := range em.Requests()[before:] {
			ops = append(ops, r.Operation)
		}
		out = append(out, Calls{Scenario: sc.name, Outcome: string(v.Outcome), Requests: len(ops), Operations: strings.Join(ops, ", ")})
	}
	return out, nil
}

// refuseDeadLetters fails every dead letter: none of the scenarios should
// produce one, and a failure makes the verdict a retry, which calls
// reports.
type refuseDeadLetters struct{}

func (refuseDeadLetters) DeadLetter(context.Context, ports.DeadLetter) error {
	return errors.New("bench: unexpected dead letter")
}
