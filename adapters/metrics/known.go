package metrics

import (
	"slices"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// DeadLetterReasons returns every reason the service dead-letters a message
// for (app.DeadLetterReasons). New creates referrer_sync_dead_letters_total
// at 0 for each.
func DeadLetterReasons() []string { return slices.Clone(app.DeadLetterReasons) }

// RetryCauses returns every cause the service gives a retry
// (app.RetryCauses).
func RetryCauses() []string { return slices.Clone(app.RetryCauses) }

// Known is what the service can count under the current configuration.
type Known struct {
	// Catalog holds the configured campaigns and their actions (and the
	// default campaign, counted as app.LabelUnconfigured).
	Catalog *domain.Catalog
	// Reasons and Causes default to DeadLetterReasons() and RetryCauses().
	Reasons []string
	Causes  []string
}

// Init creates, at 0, every outcome and retry series the configuration can
// produce: increase() and rate() see nothing of a series whose first sample
// is already 1, so without it the first dead letter of a reason, or the first
// retry of a cause, would never alert, and panels stay empty until then. Call
// it at start-up and after each reload that changed the campaigns; series of
// campaigns no longer configured keep their values.
func (m *Metrics) Init(k Known) {
	reasons, causes := k.Reasons, k.Causes
	if reasons == nil {
		reasons = DeadLetterReasons()
	}
	if causes == nil {
		causes = RetryCauses()
	}
	for _, r := range reasons {
		m.deadLetters.WithLabelValues(r)
	}
	// Undecodable events carry no trustworthy campaign.
	for _, r := range reasons {
		m.events.WithLabelValues(m.campaign(app.LabelUnknown), "", string(domain.OutcomeDeadLettered), r)
	}
	m.retries.WithLabelValues(m.campaign(app.LabelUnknown), "dead_letter_failed")
	if k.Catalog == nil {
		return
	}
	campaign := func(label string, action domain.Action) {
		for _, o := range outcomes(action) {
			m.events.WithLabelValues(m.campaign(label), string(action), string(o), "")
		}
		for _, r := range reasons {
			m.events.WithLabelValues(m.campaign(label), string(action), string(domain.OutcomeDeadLettered), r)
		}
		for _, c := range causes {
			m.retries.WithLabelValues(m.campaign(label), c)
		}
	}
	for id, c := range k.Catalog.Campaigns {
		campaign(id, c.Action)
	}
	if d := k.Catalog.Default; d != nil {
		campaign(app.LabelUnconfigured, d.Action)
	} else {
		m.events.WithLabelValues(m.campaign(app.LabelUnconfigured), "", string(domain.OutcomeUnconfigured), "")
	}
}

// outcomes are the settled outcomes other than a dead letter that a
// campaign with the action can have.
func outcomes(a domain.Action) []domain.Outcome {
	if a == domain.ActionNothing {
		return []domain.Outcome{domain.OutcomeNothing}
	}
	return []domain.Outcome{domain.OutcomeCreated, domain.OutcomeUpdated, domain.OutcomeSkipped, domain.OutcomeDuplicate}
}
