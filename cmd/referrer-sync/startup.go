package main

// Start-up waits out transient trouble. A replica restarted while NATS
// restarts, while a fresh cluster is still electing leaders, or while the
// CRM answers 429 must not exit: under an orchestrator that is a crash loop
// exactly when the system is under stress. Each step of start-up (connect,
// provision, verify the CRM tokens) is retried with capped, jittered
// backoff while its failure is one that passes; /healthz answers and
// /readyz says what start-up is waiting for meanwhile. Only failures that
// fail the same way every time stop start-up: a configuration the server
// refuses, a NATS authorization violation, a CRM token refused (401/403).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/ports"
)

// Start-up backoff: the first retry after about startBackoffBase, doubling
// to startBackoffCap; each wait is drawn from [d/2, d] so replicas that
// failed together do not retry in lockstep. A CRM's Retry-After is honoured
// up to startRetryAfterCap.
const (
	startBackoffBase   = 200 * time.Millisecond
	startBackoffCap    = 10 * time.Second
	startRetryAfterCap = 2 * time.Minute
)

// errInterrupted marks a start-up that was stopped (SIGTERM, SIGINT) while
// it waited: not a failure, the process exits 0.
var errInterrupted = errors.New("start-up interrupted")

// interrupted reports whether start's error is a requested stop.
func interrupted(err error) bool { return errors.Is(err, errInterrupted) }

// retryable classifies a failed start-up step: whether it may pass on its
// own, and the earliest useful retry (zero when the failure does not say).
type retryable func(err error) (transient bool, after time.Duration)

// startStep runs fn until it succeeds, fails in a way that does not pass,
// or ctx ends. Each transient failure is logged at warn with the attempt
// number and shown by /readyz.
func (in *instance) startStep(ctx context.Context, step string, classify retryable, fn func(context.Context) error) error {
	in.setPhase(step)
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			if attempt > 1 {
				in.log.Info("start-up step succeeded after transient failures", "step", step, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%s, attempt %d: %w)", errInterrupted, step, attempt, err)
		}
		transient, after := classify(err)
		if !transient {
			return err
		}
		wait := max(backoffDelay(attempt), min(after, startRetryAfterCap))
		in.log.Warn("start-up step failed; retrying", "step", step, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "error", err)
		in.setPhase(fmt.Sprintf("%s (attempt %d failed: %v; retrying in %s)", step, attempt, err, wait.Round(time.Millisecond)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%s, after attempt %d: %w)", errInterrupted, step, attempt, err)
		case <-t.C:
		}
		in.setPhase(step)
	}
}

// backoffDelay is the wait after failed attempt n (1-based).
func backoffDelay(n int) time.Duration {
	d := min(startBackoffBase<<min(n-1, 16), startBackoffCap)
	return d/2 + rand.N(d/2+1) //nolint:gosec // G404: jitter spreads replicas' retries; nothing secret depends on it
}

// setPhase records what start-up is doing, for /readyz.
func (in *instance) setPhase(s string) { in.phase.Store(&s) }

// natsTransient classifies NATS and JetStream failures at start-up:
// unreachable servers, timeouts (a JetStream API call answers within 5 s
// or not at all, as when several replicas provision a replicated bucket at
// once) and the 5xx answers of a cluster that is electing leaders or
// missing peers pass. Authorization violations, refused configurations and
// errors of our own (a stream that does not capture the subject, an
// invalid setting) do not.
func natsTransient(err error) (bool, time.Duration) {
	for _, perm := range []error{
		nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired,
		nats.ErrPermissionViolation, nats.ErrBadSubject,
		jetstream.ErrJetStreamNotEnabledForAccount,
	} {
		if errors.Is(err, perm) {
			return false, 0
		}
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case 10074, // replicas > 1 not supported in non-clustered mode
			10052, // invalid stream configuration
			10039, // JetStream not enabled for account
			10035, // account not found
			10010, // clustering support required
			10036, // not supported in clustered mode
			10006, // not in clustered mode
			10047, // insufficient storage resources
			10028: // insufficient memory resources
			return false, 0
		case 10005: // no suitable peers for placement: a fresh cluster whose peers have not all joined yet (answered 400)
			return true, 0
		default:
			return api.Code >= 500, 0
		}
	}
	for _, tr := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoServers, nats.ErrNoResponders,
		nats.ErrConnectionReconnecting, nats.ErrConnectionClosed, nats.ErrDisconnected, nats.ErrStaleConnection,
		jetstream.ErrJetStreamNotEnabled,
	} {
		if errors.Is(err, tr) {
			return true, 0
		}
	}
	var ne net.Error
	return errors.As(err, &ne), 0
}

// crmTransient classifies CRM failures while verifying tokens: 5xx,
// timeouts, connection errors and 429 pass (a 429 says when); a refused
// token (401/403) and a request the CRM rejects as such (400, 404) do not.
func crmTransient(err error) (bool, time.Duration) {
	switch ports.KindOf(err) {
	case ports.Transient:
		return true, 0
	case ports.RateLimited:
		var pe *ports.Error
		if errors.As(err, &pe) {
			return true, pe.RetryAfter
		}
		return true, 0
	default:
		return false, 0
	}
}
