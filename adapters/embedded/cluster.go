package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterConfig configures an embedded JetStream cluster: several servers
// in one process, joined by routes on loopback, each with its own store.
// Tests use it to run the service against replicated streams and buckets
// and to kill the node that leads them.
type ClusterConfig struct {
	Nodes    int    // default 3
	Name     string // cluster name; default "referrer-sync"
	StoreDir string // required; node i stores under StoreDir/n<i>
	// SyncAlways: see Config.SyncAlways.
	SyncAlways bool
}

// Cluster is a running embedded JetStream cluster. Its nodes keep their
// client and route ports and their stores across Stop and Restart, so
// clients reconnect to a restarted node as to a real one.
type Cluster struct {
	name  string
	mu    sync.Mutex
	opts  []*server.Options
	nodes []*server.Server // nil while stopped
}

// StartCluster starts every node and waits until the cluster has elected a
// JetStream meta leader, that is until it can create streams.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("embedded: %d nodes", cfg.Nodes)
	}
	if cfg.Name == "" {
		cfg.Name = "referrer-sync"
	}
	// Ports are chosen up front so that every node's routes name every
	// other node, and a restarted node comes back where it was.
	ports, err := freePorts(2 * cfg.Nodes)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	routes := make([]string, cfg.Nodes)
	for i := range cfg.Nodes {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[cfg.Nodes+i])
	}
	c := &Cluster{name: cfg.Name, nodes: make([]*server.Server, cfg.Nodes)}
	for i := range cfg.Nodes {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   filepath.Join(cfg.StoreDir, fmt.Sprintf("n%d", i)),
			SyncAlways: cfg.SyncAlways,
			Cluster: server.ClusterOpts{
				Name: cfg.Name,
				Host: "127.0.0.1",
				Port: ports[cfg.Nodes+i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
			NoLog:  true,
			NoSigs: true,
		})
	}
	for i := range cfg.Nodes {
		if err := c.Restart(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.WaitMetaLeader(30 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// Nodes is the number of nodes, running or not.
func (c *Cluster) Nodes() int { return len(c.opts) }

// URL is node i's client URL (whether it runs or not).
func (c *Cluster) URL(i int) string {
	return fmt.Sprintf("nats://%s:%d", c.opts[i].Host, c.opts[i].Port)
}

// URLs is every node's client URL, comma-separated, as nats.url takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.opts))
	for i := range c.opts {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Running reports whether node i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i] != nil
}

// Stop shuts node i down (its store stays) and waits until it is gone.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again, on its ports and store, and waits until it
// accepts connections. Starting a running node is an error.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i] != nil {
		return fmt.Errorf("embedded: node %d is running", i)
	}
	var err error
	// The ports were just released by the previous process of the node;
	// a short retry covers a slow close.
	for range 20 {
		var s *server.Server
		o := c.opts[i].Clone()
		if s, err = server.NewServer(o); err == nil {
			s.Start()
			if s.ReadyForConnections(10 * time.Second) {
				c.nodes[i] = s
				return nil
			}
			s.Shutdown()
			s.WaitForShutdown()
			err = fmt.Errorf("node %d not ready within 10s", i)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("embedded: start node %d: %w", i, err)
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.opts {
		c.Stop(i)
	}
}

// WaitMetaLeader waits until a running node is the JetStream meta leader
// and every running node is current with it.
func (c *Cluster) WaitMetaLeader(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c.mu.Lock()
		leader, current, running := false, 0, 0
		for _, s := range c.nodes {
			if s == nil {
				continue
			}
			running++
			if s.JetStreamIsLeader() {
				leader = true
			}
			if s.JetStreamIsCurrent() {
				current++
			}
		}
		c.mu.Unlock()
		if leader && current == running {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded: no JetStream meta leader within %s", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StreamLeader is the index of the running node that leads the stream (a
// key-value bucket b is the stream KV_b) in the global account, or -1.
func (c *Cluster) StreamLeader(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.nodes {
		if s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// ConsumerLeader is the index of the running node that leads the durable
// consumer, or -1.
func (c *Cluster) ConsumerLeader(stream, consumer string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.nodes {
		if s != nil && s.JetStreamIsConsumerLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream, consumer) {
			return i
		}
	}
	return -1
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close() // only held to keep the ports distinct; nothing was served
		}
	}()
	var lc net.ListenConfig
	var ports []int
	for range n {
		l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
