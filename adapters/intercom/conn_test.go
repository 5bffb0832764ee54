package intercom

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/referrer-sync/referrer-sync/domain"
)

// TestConnectionsAreReused: every worker can have a request in flight to
// the one Intercom host; their connections must stay open between requests
// rather than be closed and dialled again (with a TLS handshake each time)
// as Go's default of two idle connections per host would do.
func TestConnectionsAreReused(t *testing.T) {
	const workers, rounds = 16, 4
	var dialled atomic.Int64
	var gate sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		gate.Done()
		gate.Wait() // all of a round's requests are in flight together
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type":"list","data":[],"total_count":0}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialled.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL, nil, nil)
	for range rounds {
		gate.Add(workers)
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() {
				if _, err := c.Find(t.Context(), domain.Identity{Email: "p@example.com"}); err != nil {
					t.Errorf("Find #%d: %v", i, err)
				}
			})
		}
		wg.Wait()
	}
	if n := dialled.Load(); n > workers {
		t.Errorf("%d connections for %d rounds of %d concurrent requests, want at most %d", n, rounds, workers, workers)
	}
}
