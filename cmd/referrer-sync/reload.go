package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/metrics"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// reloader applies changes to the campaign settings (campaigns,
// default_campaign) of a running service: on SIGHUP, and when the file's
// content changes. It compares a hash of the bytes rather than watching
// file events, which also sees Kubernetes ConfigMap updates (an atomic swap
// of a symlinked directory that inotify watches on the file itself miss).
//
// A new file is parsed and validated as at start-up; one with any problem
// is rejected as a whole, with every problem logged, and the settings in
// force stay. Changes to anything else (nats, connections, http…) are
// logged as needing a restart and ignored. A reload swaps one immutable
// catalog (app.Service.SetCatalog), so every event sees one version.
type reloader struct {
	path    string
	running *config.File // as started: the settings a reload cannot change
	conns   []string     // connections this process has a CRM for
	svc     *app.Service
	metrics *metrics.Metrics
	dryRun  bool // a dry run's metrics count no outcomes (metrics.Init)
	log     *slog.Logger
	// checkAttributes warns about mapped custom attributes (Intercom) and
	// contact properties (HubSpot) the CRM account lacks, as start-up
	// checks them.
	checkAttributes func(context.Context, *config.File)

	last       string // hash (or read error) of the content last tried
	generation int
}

func newReloader(in *instance) *reloader {
	return &reloader{
		path: in.opt.configPath, running: in.file, conns: in.crmNames(), svc: in.svc, metrics: in.metrics, dryRun: in.opt.dryRun,
		log: in.log.With("component", "reload"), checkAttributes: in.checkAttributes,
		last: in.opt.configHash, generation: 1,
	}
}

// run polls the file every interval and reloads on each value from
// trigger, until ctx is done.
func (r *reloader) run(ctx context.Context, every time.Duration, trigger <-chan os.Signal) {
	if r.last == "" {
		r.last, _, _ = r.read()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-trigger:
			state, b, err := r.read()
			r.apply(ctx, state, b, err, "signal "+sig.String())
		case <-t.C:
			if state, b, err := r.read(); state != r.last {
				r.apply(ctx, state, b, err, "file changed")
			}
		}
	}
}

// read returns the file's content and its state: the content's SHA-256, or
// the read error, so a file that stays unreadable is reported once.
func (r *reloader) read() (state string, b []byte, err error) {
	b, err = os.ReadFile(r.path)
	if err != nil {
		return "error: " + err.Error(), nil, err
	}
	return contentHash(b), b, nil
}

func contentHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// apply tries one version of the file: it is put in force whole, or
// rejected whole.
func (r *reloader) apply(ctx context.Context, state string, b []byte, readErr error, cause string) {
	r.last = state
	f, problems := r.check(b, readErr)
	if len(problems) > 0 {
		r.metrics.Reload(false)
		r.log.ErrorContext(ctx, "configuration reload rejected; the campaign settings in force are unchanged",
			"path", r.path, "cause", cause, "problems", problems, "generation", r.generation)
		return
	}
	r.svc.SetCatalog(f.Catalog())
	if !r.dryRun {
		r.metrics.Init(metrics.Known{Catalog: f.Catalog()}) // new campaigns' series at 0
	}
	r.generation++
	r.metrics.Reload(true)
	r.metrics.ConfigLoaded(state)
	r.log.InfoContext(ctx, "configuration reloaded: campaign settings applied to the next events",
		"path", r.path, "cause", cause, "campaigns", len(f.Campaigns), "default_campaign", f.DefaultCampaign != nil,
		"generation", r.generation, "sha256", state[:12])
	if changed := r.running.RestartChanges(f); len(changed) > 0 {
		r.log.WarnContext(ctx, "configuration changes outside campaigns and default_campaign need a restart; they are ignored until then",
			"path", r.path, "sections", changed)
	}
	for _, w := range f.Warnings() {
		r.log.WarnContext(ctx, w)
	}
	if r.checkAttributes != nil {
		r.checkAttributes(ctx, f)
	}
}

// check parses and validates the content, returning every problem.
func (r *reloader) check(b []byte, readErr error) (*config.File, []string) {
	if readErr != nil {
		return nil, []string{readErr.Error()}
	}
	f, err := config.Parse(b)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var problems []string
	if err := f.Validate(); err != nil {
		problems = strings.Split(err.Error(), "\n")
	}
	// A campaign may only use a connection this process runs: connections
	// are built at start-up, and an event routed to a missing one could
	// only be retried until dead-lettered.
	check := func(path string, c *config.Campaign) {
		if c == nil || domain.Action(c.Referrers.Action) == domain.ActionNothing {
			return
		}
		if _, inFile := f.Connections[c.Connection]; inFile && !slices.Contains(r.conns, c.Connection) {
			problems = append(problems, fmt.Sprintf("%s.connection: %q is not a connection this process runs (connections change only on restart; running: %s)",
				path, c.Connection, strings.Join(r.conns, ", ")))
		}
	}
	ids := make([]string, 0, len(f.Campaigns))
	for id := range f.Campaigns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := f.Campaigns[id]
		check("campaigns."+id, &c)
	}
	check("default_campaign", f.DefaultCampaign)
	return f, problems
}
