package bench

import (
	"os"
	"strconv"
	"testing"
	"time"
)

func TestScratch(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCRATCH_EVENTS"))
	if n == 0 {
		t.Skip()
	}
	opt := DefaultOptions()
	opt.Events = n
	opt.LatencySeconds = 10
	opt.FlatTo = 0
	opt.RateLimitSeconds = 0
	opt.SkipCalls = true
	opt.Progress = os.Stderr
	opt.ProfileDir = os.Getenv("SCRATCH_PROF")
	if ws := os.Getenv("SCRATCH_LW"); ws != "" {
		opt.LatencyWorkers = nil
		for _, f := range []string{ws} {
			w, _ := strconv.Atoi(f)
			opt.LatencyWorkers = append(opt.LatencyWorkers, w)
		}
	}
	_ = time.Second
	rep, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	rep.WriteTable(os.Stderr)
}

func TestScratchRL(t *testing.T) {
	secs, _ := strconv.ParseFloat(os.Getenv("SCRATCH_RL"), 64)
	if secs == 0 {
		t.Skip()
	}
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	opt := DefaultOptions()
	opt.RateLimitSeconds = secs
	if err := env.Publish(t.Context(), 5000); err != nil {
		t.Fatal(err)
	}
	rs, err := env.rateLimits(t.Context(), opt, func(f string, a ...any) { t.Logf(f, a...) })
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		t.Log(r.describe())
	}
}

func TestScratchRL2(t *testing.T) {
	secs, _ := strconv.ParseFloat(os.Getenv("SCRATCH_RL2"), 64)
	if secs == 0 {
		t.Skip()
	}
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	opt := DefaultOptions()
	if err := env.Publish(t.Context(), 5000); err != nil {
		t.Fatal(err)
	}
	reps, _ := strconv.Atoi(os.Getenv("SCRATCH_REPS"))
	_, _, log, err := env.runPipeline(t.Context(), spec{
		name: "x", events: env.published, duration: time.Duration(secs * float64(time.Second)), workers: opt.Workers, replicas: reps,
		ledger: true, crm: crmEmulator, latency: opt.Latency, conns: []connSpec{{name: "main", rateLimit: sustainedLimit}},
	})
	if err != nil {
		t.Fatal(err)
	}
	per := map[int64][2]int{}
	for _, r := range log {
		w := r.Time.Unix() / 10
		c := per[w]
		if r.Status == 429 {
			c[1]++
			t.Logf("429 at %s (%.3f into window)", r.Time.Format("15:04:05.000"), float64(r.Time.UnixNano()%10e9)/1e9)
		} else {
			c[0]++
		}
		per[w] = c
	}
	t.Log(per)
}
