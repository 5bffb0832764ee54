package metrics

import (
	"slices"

	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// DeadLetterReasons returns every reason the service dead-letters a message
// for (app.DeadLetterReasons). Init creates referrer_sync_dead_letters_total
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

// invalidReasons are the reasons domain.DecodeEvent rejects an event for.
// Such an event is counted with no action: under its campaign's label when
// its campaign could be read, else app.LabelUnknown.
var invalidReasons = []string{
	domain.ReasonTooLarge, domain.ReasonMalformed, domain.ReasonWrongType, domain.ReasonMissingID,
	domain.ReasonMissingCampaign, domain.ReasonMissingEmail, domain.ReasonInvalidEmail,
}

// Init creates, at 0, every outcome and retry series the configuration can
// produce: increase() and rate() see nothing of a series whose first sample
// is already 1, so without it the first dead letter of a reason, or the first
// retry of a cause, would never alert, and panels stay empty until then. Call
// it at start-up and after each reload that changed the campaigns; series of
// campaigns no longer configured keep their values. A dry run does not call
// it: it settles nothing, so these series stay absent there.
func (m *Metrics) Init(k Known) {
	reasons, causes := k.Reasons, k.Causes
	if reasons == nil {
		reasons = DeadLetterReasons()
	}
	if causes == nil {
		causes = RetryCauses()
	}
	var invalid, failed []string // rejected by the decoder; failed later, with an action
	for _, r := range reasons {
		m.deadLetters.WithLabelValues(r)
		if slices.Contains(invalidReasons, r) {
			invalid = append(invalid, r)
		} else {
			failed = append(failed, r)
		}
	}
	dead := string(domain.OutcomeDeadLettered)
	rejected := func(label string) {
		for _, r := range invalid {
			m.events.WithLabelValues(m.campaign(label), "", dead, r)
		}
	}
	rejected(app.LabelUnknown)
	m.retries.WithLabelValues(m.campaign(app.LabelUnknown), app.CauseDeadLetterFailed)
	if k.Catalog == nil {
		return
	}
	campaign := func(label string, action domain.Action) {
		rejected(label)
		for _, c := range causes {
			m.retries.WithLabelValues(m.campaign(label), c)
		}
		if action == domain.ActionNothing {
			m.events.WithLabelValues(m.campaign(label), string(action), string(domain.OutcomeNothing), "")
			return
		}
		for _, o := range []domain.Outcome{domain.OutcomeCreated, domain.OutcomeUpdated, domain.OutcomeSkipped, domain.OutcomeDuplicate} {
			m.events.WithLabelValues(m.campaign(label), string(action), string(o), "")
		}
		for _, r := range failed {
			m.events.WithLabelValues(m.campaign(label), string(action), dead, r)
		}
	}
	for id, c := range k.Catalog.Campaigns {
		campaign(id, c.Action)
	}
	if d := k.Catalog.Default; d != nil {
		campaign(app.LabelUnconfigured, d.Action)
	} else {
		rejected(app.LabelUnconfigured)
		m.events.WithLabelValues(m.campaign(app.LabelUnconfigured), "", string(domain.OutcomeUnconfigured), "")
	}
}
