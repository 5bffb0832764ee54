package main

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestComposeNATSDurability checks that every NATS node of both compose
// stacks reads compose/nats.conf, and that the file, read by the NATS
// server's own parser, fsyncs every JetStream write before acknowledging
// it; a server started from it runs with that setting.
func TestComposeNATSDurability(t *testing.T) {
	const conf = "compose/nats.conf"
	cases := []struct {
		name  string
		files []string
		nodes []string
	}{
		{"single node", []string{"compose.yaml"}, []string{"nats"}},
		{"cluster", []string{"compose.yaml", "compose.cluster.yaml"}, []string{"nats", "nats-2", "nats-3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			services := composeFile(t, tc.files...)["services"].(map[string]any)
			for _, n := range tc.nodes {
				args := composeCommand(services[n])
				target := argAfter(args, "-c")
				if target == "" {
					target = argAfter(args, "--config")
				}
				if target == "" {
					t.Errorf("%s: command %v names no configuration file (-c)", n, args)
					continue
				}
				if src := bindMounts(services[n])[target]; src != conf {
					t.Errorf("%s: -c %s is mounted from %q, want %s", n, target, src, conf)
				}
				if !slices.Contains(args, "--store_dir") {
					t.Errorf("%s: no --store_dir: the file does not set one", n)
				}
			}
		})
	}

	opts, err := server.ProcessConfigFile(deployPath(conf))
	if err != nil {
		t.Fatalf("%s: %v", conf, err)
	}
	if !opts.SyncAlways {
		t.Errorf("%s: JetStream sync_interval is %s, want always (fsync before every acknowledgement)", conf, opts.SyncInterval)
	}
	// Started as compose starts it: the file, then the command line's store.
	opts.StoreDir = filepath.Join(t.TempDir(), "js")
	opts.Port, opts.HTTPPort = -1, 0
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("server from %s: %v", conf, err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server from %s not ready", conf)
	}
	if !srv.JetStreamEnabled() {
		t.Errorf("server from %s: JetStream not enabled", conf)
	}
}
