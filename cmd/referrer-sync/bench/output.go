package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of the issue, as ratios: (2)/(1), (3)/(1), and (5) against
// workers ÷ latency.
const (
	TargetPipeline = 0.75
	TargetLedger   = 0.5
	TargetLatency  = 0.9
)

// WriteJSON writes one JSON object per configuration, one per line, with
// the keys name, events, events_per_sec, ratio_to_baseline, p50_ms, p99_ms,
// cpu_us_per_event and peak_rss_mb.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, res := range r.Results {
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes the configurations as one table, followed by memory
// flatness, CRM requests per kind of event, the rate-limit measurements
// and the targets.
func (r *Report) WriteTable(w io.Writer) error {
	var out writes
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	out.println(tw, "configuration\tworkers\tevents\tevents/s\t× baseline\tp50 ms\tp99 ms\tsvc p50 ms\tsvc p99 ms\tcpu µs/event\tpeak RSS MiB\tCRM req/event\t% of ideal\tretries\t")
	for _, res := range r.Results {
		workers, reqs, ideal := "-", "-", "-"
		if res.Workers > 0 {
			workers = fmt.Sprint(res.Workers)
		}
		if res.RequestsPerEvent > 0 {
			reqs = fmt.Sprintf("%.2f", res.RequestsPerEvent)
		}
		kv := "-"
		if res.KVReadsPerEvent > 0 {
			kv = fmt.Sprintf("%.2f+%.2f", res.KVReadsPerEvent, res.KVWritesPerEvent)
		}
		if res.Ideal > 0 {
			ideal = fmt.Sprintf("%.0f%%", 100*res.EventsPerSec/res.Ideal)
		}
		retries := 0
		for _, n := range res.Retries {
			retries += n
		}
		out.printf(tw, "%s\t%s\t%d\t%.0f\t%.2f\t%.1f\t%.1f\t%.2f\t%.2f\t%.0f\t%.0f\t%s\t%s\t%s\t%d\t\n",
			res.Name, workers, res.Events, res.EventsPerSec, res.RatioToBaseline, res.P50ms, res.P99ms,
			res.ServiceP50ms, res.ServiceP99ms, res.CPUusPerEvent, res.PeakRSSMB, reqs, kv, ideal, retries)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	out.printf(w, "\n%d × %s, %s, %s; %s in all.\n", r.Machine.CPUs, r.Machine.Model, r.Machine.GoVersion, r.Machine.OS, r.Elapsed.Round(time.Second))
	var runs []string
	for _, res := range r.Results {
		if len(res.Runs) > 1 {
			rates := make([]string, len(res.Runs))
			for i, v := range res.Runs {
				rates[i] = fmt.Sprintf("%.0f", v)
			}
			runs = append(runs, res.Name+" "+strings.Join(rates, ", "))
		}
	}
	if len(runs) > 0 {
		out.printf(w, "Runs interleaved, the median shown; events/s of each run: %s.\n", strings.Join(runs, "; "))
	}
	if !r.PeakPerConfig {
		out.println(w, "Peak RSS could not be reset between configurations: each peak is the process's so far.")
	}
	if m := r.Memory; m != nil {
		verdict := "flat (within 20%)"
		if !m.Flat {
			verdict = "NOT flat (over 20%)"
		}
		series := make([]string, len(m.Series))
		for i, v := range m.Series {
			series[i] = fmt.Sprintf("%.0f", v)
		}
		out.printf(w, "\nMemory (%s): RSS %.0f MiB after %d events, %.0f MiB after %d (×%.2f): %s. Go heap objects %.0f → %.0f MiB. RSS after each tenth of the run: %s MiB.\n",
			m.Config, m.RSSFromMB, m.From, m.RSSToMB, m.To, m.Ratio, verdict, m.HeapFromMB, m.HeapToMB, strings.Join(series, ", "))
	}
	if len(r.Calls) > 0 {
		out.println(w, "\nCRM requests per event:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, c := range r.Calls {
			out.printf(tw, "  %s\t%d\t%s\t%s\n", c.Scenario, c.Requests, c.Outcome, orDash(c.Operations))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(r.RateLimit) > 0 {
		out.println(w, "\nRate limits:")
		for _, rl := range r.RateLimit {
			out.println(w, "  "+rl.describe())
		}
	}
	if t := r.targets(); len(t) > 0 {
		out.println(w, "\nTargets:")
		for _, line := range t {
			out.println(w, "  "+line)
		}
	}
	return out.err
}

// targets states each target of the issue, met or missed.
func (r *Report) targets() []string {
	var out []string
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	var ceiling float64 // what (4) reaches with no latency: where CPU or broker binds
	for _, res := range r.Results {
		if res.Name == NameEmulator {
			ceiling = res.EventsPerSec
		}
	}
	for _, res := range r.Results {
		switch {
		case res.Name == NamePipeline:
			out = append(out, fmt.Sprintf("(2)/(1) = %.2f, target ≥ %.2f: %s", res.RatioToBaseline, TargetPipeline, check(res.RatioToBaseline >= TargetPipeline)))
		case res.Name == NamePipelineLedger:
			out = append(out, fmt.Sprintf("(3)/(1) = %.2f, target ≥ %.2f: %s", res.RatioToBaseline, TargetLedger, check(res.RatioToBaseline >= TargetLedger)))
		case res.Ideal > 0 && ceiling > 0 && res.Ideal*TargetLatency > ceiling:
			out = append(out, fmt.Sprintf("%s: %.0f of an ideal %.0f events/s = %.0f%%; CPU/broker-bound: 90%% of the ideal is above the %.0f events/s (4) reaches with no latency at all; %.0f%% of that",
				res.Name, res.EventsPerSec, res.Ideal, 100*res.EventsPerSec/res.Ideal, ceiling, 100*res.EventsPerSec/ceiling))
		case res.Ideal > 0:
			share := res.EventsPerSec / res.Ideal
			out = append(out, fmt.Sprintf("%s: %.0f of an ideal %.0f events/s = %.0f%%, target ≥ %.0f%%: %s",
				res.Name, res.EventsPerSec, res.Ideal, 100*share, 100*TargetLatency, check(share >= TargetLatency)))
		}
	}
	for _, rl := range r.RateLimit {
		if rl.Windows > 0 {
			out = append(out, fmt.Sprintf("%s: %.1f%% of the allowed rate (≥ 95%%), %.2f%% answered 429 (≤ 1%%): %s",
				rl.Name, 100*rl.RateShare, 100*rl.Share429, check(rl.RateShare >= 0.95 && rl.Share429 <= 0.01)))
		}
	}
	return out
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// writes keeps the first error of a run of writes, so that a report of many
// lines checks them once, where it returns; after an error it writes
// nothing more.
type writes struct{ err error }

func (x *writes) printf(w io.Writer, format string, args ...any) {
	if x.err == nil {
		_, x.err = fmt.Fprintf(w, format, args...)
	}
}

func (x *writes) println(w io.Writer, args ...any) {
	if x.err == nil {
		_, x.err = fmt.Fprintln(w, args...)
	}
}
