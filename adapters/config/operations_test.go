package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/config"
)

func TestOperationsSettings(t *testing.T) {
	t.Setenv("NATS_URL", "")
	withDrain := strings.Replace(valid, "  ack_wait: 30s\n", "  ack_wait: 30s\n  drain_timeout: 12s\n", 1)
	tests := []struct {
		name           string
		doc            string
		wantLabels     bool
		wantPoll       time.Duration
		wantReloadPoll time.Duration
		wantDrain      time.Duration
	}{
		{name: "defaults", doc: valid, wantLabels: true},
		{
			name:       "set",
			doc:        withDrain + "metrics: {campaign_labels: false, consumer_poll_interval: 250ms}\nreload: {poll_interval: 2s}\n",
			wantLabels: false, wantPoll: 250 * time.Millisecond, wantReloadPoll: 2 * time.Second, wantDrain: 12 * time.Second,
		},
		{name: "labels on", doc: valid + "metrics: {campaign_labels: true}\n", wantLabels: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := f.Metrics.CampaignLabelsEnabled(); got != tt.wantLabels {
				t.Errorf("campaign labels: got %v, want %v", got, tt.wantLabels)
			}
			if got := time.Duration(f.Metrics.ConsumerPollInterval); got != tt.wantPoll {
				t.Errorf("consumer poll interval: got %s, want %s", got, tt.wantPoll)
			}
			if got := time.Duration(f.Reload.PollInterval); got != tt.wantReloadPoll {
				t.Errorf("reload poll interval: got %s, want %s", got, tt.wantReloadPoll)
			}
			if got := time.Duration(f.NATS.DrainTimeout); got != tt.wantDrain {
				t.Errorf("drain timeout: got %s, want %s", got, tt.wantDrain)
			}
		})
	}
}

func TestOperationsSettingsProblems(t *testing.T) {
	t.Setenv("NATS_URL", "")
	tests := []struct {
		name, extra, want string
	}{
		{"negative drain", "nats: {drain_timeout: -1s}\n", "nats.drain_timeout: must not be negative"},
		{"consumer poll too fast", "metrics: {consumer_poll_interval: 10ms}\n", "metrics.consumer_poll_interval: 10ms is not at least 100ms"},
		{"reload poll too fast", "reload: {poll_interval: 1ms}\n", "reload.poll_interval: 1ms is not at least 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(valid, "nats:\n  url: nats://127.0.0.1:4222\n  workers: 8\n  ack_wait: 30s\n", "", 1) + tt.extra
			f, err := config.Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			err = f.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a problem %q", err, tt.want)
			}
		})
	}
}

func TestRestartChanges(t *testing.T) {
	t.Setenv("NATS_URL", "")
	tests := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"identical", func(s string) string { return s }, nil},
		{"campaigns only", func(s string) string { return strings.Replace(s, "on_duplicate: update", "on_duplicate: skip", 1) }, nil},
		{"default campaign added", func(s string) string {
			return s + "default_campaign: {connection: main, referrers: {action: create_lead, on_duplicate: skip, fields: [{from: referrer.email, to: email}]}}\n"
		}, nil},
		{"workers", func(s string) string { return strings.Replace(s, "workers: 8", "workers: 4", 1) }, []string{"nats"}},
		{"region and log", func(s string) string {
			return strings.Replace(s, "region: eu", "region: us", 1) + "log: {level: debug}\n"
		}, []string{"log", "connections"}},
		{"reload and metrics", func(s string) string { return s + "reload: {poll_interval: 1s}\nmetrics: {campaign_labels: false}\n" }, []string{"metrics", "reload"}},
	}
	base, err := config.Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, err := config.Parse([]byte(tt.edit(valid)))
			if err != nil {
				t.Fatal(err)
			}
			if got := base.RestartChanges(next); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
