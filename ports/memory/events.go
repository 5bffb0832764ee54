package memory

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

// DeadLetters is an in-memory ports.DeadLetters.
type DeadLetters struct {
	// Fault, when set, is asked before every store; a non-nil error fails
	// it without effect.
	Fault func(d ports.DeadLetter) error

	mu      sync.Mutex
	letters []ports.DeadLetter
}

// DeadLetter implements ports.DeadLetters: a nil error means stored.
func (d *DeadLetters) DeadLetter(ctx context.Context, l ports.DeadLetter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.Fault != nil {
		if err := d.Fault(l); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.letters = append(d.letters, l)
	return nil
}

// Letters returns what was stored, in order.
func (d *DeadLetters) Letters() []ports.DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.letters)
}

// Metrics is an in-memory ports.Metrics that keeps what it was told.
type Metrics struct {
	mu        sync.Mutex
	outcomes  []Outcome
	retries   []string
	processed []time.Duration
	ages      []time.Duration
}

// Outcome is one counted outcome.
type Outcome struct {
	Campaign string
	Action   domain.Action
	Outcome  domain.Outcome
	Reason   string
}

func (o Outcome) String() string {
	s := o.Campaign + "|" + string(o.Action) + "|" + string(o.Outcome)
	if o.Reason != "" {
		s += "|" + o.Reason
	}
	return s
}

// Outcome implements ports.Metrics.
func (m *Metrics) Outcome(campaign string, action domain.Action, outcome domain.Outcome, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes = append(m.outcomes, Outcome{campaign, action, outcome, reason})
}

// Retry implements ports.Metrics.
func (m *Metrics) Retry(campaign, kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retries = append(m.retries, campaign+"|"+kind)
}

// Processed implements ports.Metrics.
func (m *Metrics) Processed(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.processed = append(m.processed, d)
}

// EventAge implements ports.Metrics.
func (m *Metrics) EventAge(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ages = append(m.ages, d)
}

// Outcomes returns the counted outcomes, in order.
func (m *Metrics) Outcomes() []Outcome {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.outcomes)
}

// Retries returns the counted retries as "campaign|cause", in order.
func (m *Metrics) Retries() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.retries)
}

// ProcessedTimes returns the observed processing times.
func (m *Metrics) ProcessedTimes() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.processed)
}

// EventAges returns the observed event ages.
func (m *Metrics) EventAges() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.ages)
}

// Reset forgets everything observed.
func (m *Metrics) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes, m.retries, m.processed, m.ages = nil, nil, nil, nil
}
