// Package embedded runs a NATS server with JetStream inside the process: for
// development (an empty nats.url), the demo, and tests, which exercise a real
// server rather than a mock.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	Host     string // default 127.0.0.1
	Port     int    // 0 or -1 = a random free port
	StoreDir string // JetStream file store; required, so nothing lands in a surprising place
	// SyncAlways makes JetStream fsync every write before acknowledging it
	// (nats-server's `jetstream { sync_interval: always }`). By default the
	// server flushes about every two minutes, so an OS crash or power loss
	// can lose writes it had acknowledged. The deployments set it; the
	// benchmark measures its cost.
	SyncAlways bool
}

// Server is a running embedded NATS server.
type Server struct {
	srv *server.Server
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = -1
	}
	opts := &server.Options{
		ServerName: "referrer-sync-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		SyncAlways: cfg.SyncAlways,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded: server not ready within 10s")
	}
	return &Server{srv: srv}, nil
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
