// Package metrics is the Prometheus adapter: it implements ports.Metrics,
// offers hooks for the CRM adapters' per-request observations, and serves
// /metrics, /healthz and /readyz.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/referrer-sync/referrer-sync/domain"
)

const namespace = "referrer_sync"

// LabelAll is the campaign label of every series when campaign labels are
// turned off (see CampaignLabels).
const LabelAll = "_all"

// Metrics holds the service's collectors on one registry.
type Metrics struct {
	Registry *prometheus.Registry

	events       *prometheus.CounterVec
	retries      *prometheus.CounterVec
	processing   prometheus.Histogram
	eventAge     prometheus.Histogram
	ahead        prometheus.Counter
	unauthorized *prometheus.CounterVec
	crmRequests  *prometheus.CounterVec
	crmDuration  *prometheus.HistogramVec
	crmRemaining *prometheus.GaugeVec
	deadLetters  *prometheus.CounterVec
	duplicates   prometheus.Counter
	pending      prometheus.Gauge
	ackPending   prometheus.Gauge
	reloads      *prometheus.CounterVec
	generation   prometheus.Gauge
	configInfo   *prometheus.GaugeVec
	dryRun       *prometheus.CounterVec

	campaignLabels bool
}

// Option adjusts New.
type Option func(*Metrics)

// CampaignLabels turns the campaign label on or off; off replaces every
// campaign label value with LabelAll. Campaign ids are bounded by the configuration already; this is
// for deployments where one series per campaign is still too many.
func CampaignLabels(on bool) Option { return func(m *Metrics) { m.campaignLabels = on } }

// New registers the collectors, plus the Go and process collectors, on a
// fresh registry.
func New(version string, opts ...Option) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry:       reg,
		campaignLabels: true,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_total",
			Help: "Messages by final outcome. Every message ends in exactly one outcome; reason is set for dead letters.",
		}, []string{"campaign", "action", "outcome", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "retries_total",
			Help: "Deliveries sent back for a later attempt, by cause.",
		}, []string{"campaign", "cause"}),
		processing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "event_processing_seconds",
			Help:    "Time from the settling delivery's receipt to the message's final outcome: the service's own processing time, never negative.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		// Ages span seconds (live traffic) to days (replays, backfills), so
		// an old event lands in a bucket of its own rather than in +Inf.
		eventAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "event_age_seconds",
			Help:    "Age of an event when its settling delivery was received, from its own time (else the stream's). Replays and backfills are old by design; a clock ahead of ours counts as 0 (see event_time_ahead_total).",
			Buckets: []float64{1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400},
		}),
		ahead: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "event_time_ahead_total",
			Help: "Events whose own time was after their receipt (a producer clock ahead of ours); their age is observed as 0.",
		}),
		unauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "crm_unauthorized_total",
			Help: "CRM answers 401 or 403 (the token was refused), by connection; at 0 from start-up, so the first refusal alerts.",
		}, []string{"connection"}),
		crmRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "crm_requests_total",
			Help: "HTTP requests to CRM APIs by connection, operation and status (\"error\" when no response arrived).",
		}, []string{"connection", "operation", "status"}),
		crmDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "crm_request_duration_seconds",
			Help:    "Latency of HTTP requests to CRM APIs.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"connection", "operation"}),
		crmRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "crm_rate_limit_remaining",
			Help: "Requests left in the CRM's current rate-limit window, from its last response.",
		}, []string{"connection"}),
	}
	m.deadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "dead_letters_total",
		Help: "Messages stored on the dead-letter subject, by reason.",
	}, []string{"reason"})
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "duplicates_absorbed_total",
		Help: "Deliveries of events the ledger had already recorded as applied; acknowledged without a CRM call.",
	})
	m.pending = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "consumer_pending_messages",
		Help: "Messages in the stream not yet delivered to the durable consumer (polled from consumer info).",
	})
	m.ackPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "consumer_ack_pending_messages",
		Help: "Messages delivered to the durable consumer and not yet acknowledged, across all replicas (polled from consumer info).",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "config_reloads_total",
		Help: "Configuration reload attempts by result (success, failure).",
	}, []string{"result"})
	m.generation = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "config_generation",
		Help: "Generation of the campaign settings in use: 1 at start, +1 per successful reload.",
	})
	m.generation.Set(1)
	m.configInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "config_info",
		Help: "Always 1; sha256 is the first 12 hex digits of the SHA-256 of the configuration file last loaded, so replicas running different files can be told apart.",
	}, []string{"sha256"})
	m.dryRun = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "dry_run_events_total",
		Help: "Dry run only (run --dry-run): what would have happened to each message (would_create, would_update, would_skip, would_dead_letter, nothing, duplicate, unconfigured). Nothing was written.",
	}, []string{"campaign", "action", "outcome", "reason"})
	m.reloads.WithLabelValues("success") // both series exist from the start, for rate() and alerts
	m.reloads.WithLabelValues("failure")
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info", Help: "Build information; always 1.",
	}, []string{"version"})
	buildInfo.WithLabelValues(version).Set(1)
	reg.MustRegister(m.events, m.retries, m.processing, m.eventAge, m.ahead, m.unauthorized, m.crmRequests, m.crmDuration, m.crmRemaining, buildInfo,
		m.deadLetters, m.duplicates, m.pending, m.ackPending, m.reloads, m.generation, m.configInfo, m.dryRun,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range opts {
		o(m)
	}
	return m
}

// campaign returns the label value for a campaign.
func (m *Metrics) campaign(c string) string {
	if !m.campaignLabels {
		return LabelAll
	}
	return c
}

// Outcome implements ports.Metrics.
func (m *Metrics) Outcome(campaign string, action domain.Action, outcome domain.Outcome, reason string) {
	m.events.WithLabelValues(m.campaign(campaign), string(action), string(outcome), reason).Inc()
	switch outcome {
	case domain.OutcomeDeadLettered:
		m.deadLetters.WithLabelValues(reason).Inc()
	case domain.OutcomeDuplicate:
		m.duplicates.Inc()
	case domain.OutcomeCreated, domain.OutcomeUpdated, domain.OutcomeSkipped, domain.OutcomeNothing, domain.OutcomeUnconfigured:
	}
}

// ConsumerState records the durable consumer's backlog, polled from the
// server.
func (m *Metrics) ConsumerState(pending, ackPending uint64) {
	m.pending.Set(float64(pending))
	m.ackPending.Set(float64(ackPending))
}

// Reload records a configuration reload attempt.
func (m *Metrics) Reload(ok bool) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.generation.Inc()
}

// ConfigLoaded records the SHA-256 (hex) of the configuration file in use,
// at start-up and after each successful reload.
func (m *Metrics) ConfigLoaded(sha256Hex string) {
	if len(sha256Hex) > 12 {
		sha256Hex = sha256Hex[:12]
	}
	m.configInfo.Reset()
	m.configInfo.WithLabelValues(sha256Hex).Set(1)
}

// DryRun counts what a dry run would have done with a message. It is a
// counter of its own, so a dry run never shows up in the service's
// outcome, dead-letter or duplicate series that dashboards and alerts sum
// across instances.
func (m *Metrics) DryRun(campaign string, action domain.Action, outcome domain.Outcome, reason string) {
	m.dryRun.WithLabelValues(m.campaign(campaign), string(action), string(outcome), reason).Inc()
}

// Gauges registers gauges whose values are read at scrape time: messages
// being processed in this process, and readiness (1 ready, 0 not).
func (m *Metrics) Gauges(inFlight func() float64, ready func() bool) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "in_flight_messages",
			Help: "Messages being processed by this process now.",
		}, inFlight),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ready",
			Help: "1 when the process is ready (connected, bound, tokens verified, not draining), else 0.",
		}, func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
	)
}

// Retry implements ports.Metrics.
func (m *Metrics) Retry(campaign, cause string) {
	m.retries.WithLabelValues(m.campaign(campaign), cause).Inc()
}

// Processed implements ports.Metrics. A negative duration (a clock step
// between receipt and outcome) is observed as 0: a histogram's sum must never
// decrease, or Prometheus reads a counter reset.
func (m *Metrics) Processed(d time.Duration) { m.processing.Observe(max(d, 0).Seconds()) }

// EventAge implements ports.Metrics. An age below zero (the event's time is
// after its receipt) is observed as 0 and counted in event_time_ahead_total,
// so the histogram's sum never decreases.
func (m *Metrics) EventAge(d time.Duration) {
	if d < 0 {
		m.ahead.Inc()
		d = 0
	}
	m.eventAge.Observe(d.Seconds())
}

// CRMRequest returns a per-attempt observation hook for one connection. It
// is called once per configured connection at start-up, which is when the
// connection's refused-token counter is created at 0.
func (m *Metrics) CRMRequest(connection string) func(op string, status int, d time.Duration) {
	unauthorized := m.unauthorized.WithLabelValues(connection)
	return func(op string, status int, d time.Duration) {
		s := "error"
		if status > 0 {
			s = strconv.Itoa(status)
		}
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			unauthorized.Inc()
		}
		m.crmRequests.WithLabelValues(connection, op, s).Inc()
		m.crmDuration.WithLabelValues(connection, op).Observe(d.Seconds())
	}
}

// CRMRateLimit returns a hook recording a connection's rate-limit headers.
func (m *Metrics) CRMRateLimit(connection string) func(limit, remaining int, reset time.Time) {
	return func(_, remaining int, _ time.Time) {
		m.crmRemaining.WithLabelValues(connection).Set(float64(remaining))
	}
}

// Mux serves /metrics from the registry (Watermill's per-worker series
// folded into one per handler, see foldWorkers), /healthz (the process is alive)
// and /readyz (ready() returns nil: connected, bound, tokens verified, not
// draining).
func (m *Metrics) Mux(ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(foldWorkers(m.Registry), promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready == nil {
			ready = func() error { return errors.New("no readiness check") }
		}
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
