package hubspot

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	t0 := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	const budget = 15 * time.Second
	type step struct {
		at       time.Duration // after t0
		send     bool          // the admitted request is sent and stays in flight
		wantMin  time.Duration
		wantMax  time.Duration
		wantOK   bool
		observed *[3]int // limit, remaining, interval ms observed at this step's time, before admitting
	}
	obs := func(l, r, ms int) *[3]int { return &[3]int{l, r, ms} }
	tests := []struct {
		name  string
		steps []step
	}{
		{"nothing known: no wait", []step{{wantOK: true}, {wantOK: true}}},
		{"plenty left: no spacing", []step{
			{observed: obs(190, 150, 10000), wantOK: true},
			{wantOK: true}, {wantOK: true},
		}},
		{"running low: spaced at the steady rate", []step{
			{observed: obs(100, 10, 10000), wantOK: true},
			{wantMin: 100 * time.Millisecond, wantMax: 100 * time.Millisecond, wantOK: true},
			{wantMin: 200 * time.Millisecond, wantMax: 200 * time.Millisecond, wantOK: true},
		}},
		{"spent: wait for the interval since the report", []step{
			{at: 4 * time.Second, observed: obs(100, 0, 10000), wantMin: 10 * time.Second, wantMax: 10*time.Second + rateLimitJitter, wantOK: true},
		}},
		{"spent beyond the budget: refused with when to come back, one step apart", []step{
			{observed: obs(1, 0, 20000), wantMin: 20 * time.Second, wantMax: 20*time.Second + rateLimitJitter},
			{wantMin: 40 * time.Second, wantMax: 40*time.Second + rateLimitJitter},
		}},
		{"a report older than an interval is stale: full budget", []step{
			{observed: obs(100, 0, 10000), wantMin: 10 * time.Second, wantMax: 10*time.Second + rateLimitJitter, wantOK: true},
			{at: 11 * time.Second, wantOK: true},
			{at: 11 * time.Second, wantOK: true}, // no spacing: the budget is full again
		}},
		{"requests in flight count against what is left", []step{
			{observed: obs(100, 1, 10000), send: true, wantOK: true},
			{wantMin: 10 * time.Second, wantMax: 10*time.Second + rateLimitJitter, wantOK: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p pacer
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if s.observed != nil {
					p.observe(s.observed[0], s.observed[1], time.Duration(s.observed[2])*time.Millisecond, now)
				}
				wait, ok := p.admit(now, budget)
				if ok != s.wantOK || wait < s.wantMin || wait > s.wantMax {
					t.Errorf("step %d: admit = %v, %v; want ok %v, wait in [%v, %v]", i, wait, ok, s.wantOK, s.wantMin, s.wantMax)
				}
				if ok && s.send {
					p.sent()
				}
			}
		})
	}
}

func TestPacerIgnoresOlderReports(t *testing.T) {
	t0 := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	var p pacer
	p.observe(100, 0, 10*time.Second, t0.Add(time.Second))
	p.observe(100, 99, 10*time.Second, t0) // answered earlier, arrived later
	if wait, ok := p.admit(t0.Add(time.Second), time.Minute); !ok || wait < 10*time.Second {
		t.Errorf("admit = %v, %v; want a wait for the spent interval", wait, ok)
	}
	p.observe(0, 5, 10*time.Second, t0.Add(2*time.Second)) // no limit: not enough to pace by
	if p.max != 100 {
		t.Errorf("a report without a limit replaced the state")
	}
}

func TestSpacer(t *testing.T) {
	t0 := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	s := newSpacer(4)
	for i, want := range []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond} {
		if wait, ok := s.admit(t0, time.Second); !ok || wait != want {
			t.Errorf("admit %d = %v, %v; want %v", i, wait, ok, want)
		}
	}
	if wait, ok := s.admit(t0, 500*time.Millisecond); ok || wait != 750*time.Millisecond {
		t.Errorf("over budget = %v, %v; want refused at 750ms", wait, ok)
	}
	if wait, ok := s.admit(t0, time.Second); !ok || wait != 750*time.Millisecond {
		t.Errorf("a refusal must not take a turn: %v, %v", wait, ok)
	}
	s.refused(t0)
	if wait, _ := s.admit(t0, 5*time.Second); wait != time.Second {
		t.Errorf("after a 429 = %v, want 1s: the later of the queue and a second", wait)
	}
}
