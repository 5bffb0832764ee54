package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// errDrained ends a worker: the process has stopped pulling.
var errDrained = errors.New("consumer: draining")

// subscriber is the Watermill subscriber over the durable pull consumer:
// one batched pull iterator per process, shared by every router handler
// (worker). It replaces watermill-nats, whose subscriber pulls per handler,
// cannot stop pulling without dropping what it buffered, and loses acks
// sent while it closes.
//
// Every Subscribe starts one worker: it takes the next message from the
// iterator, gives it to the router and waits until the router is done with
// it before it takes another, so at most Workers messages are in flight and
// at most PullBatch more are buffered.
type subscriber struct {
	c *Consumer

	mu      sync.Mutex
	cons    jetstream.Consumer
	iter    jetstream.MessagesContext // nil once stopPulling ran
	stopped bool
	stop    chan struct{} // closed by stopPulling
}

// start looks the durable up, learns its settings and opens the iterator.
func (s *subscriber) start(ctx context.Context) error {
	c := s.c
	cons, err := c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("consumer: durable %s on stream %s (provision it first): %w", c.cfg.Consumer, c.cfg.Stream, err)
	}
	cc := cons.CachedInfo().Config
	c.learn(cc)
	if cc.MaxRequestBatch > 0 && c.cfg.PullBatch > cc.MaxRequestBatch {
		c.log.Warn("the durable caps pull requests below nats.pull_batch; pulling fewer at a time",
			"pull_batch", c.cfg.PullBatch, "max_request_batch", cc.MaxRequestBatch)
		c.cfg.PullBatch = cc.MaxRequestBatch
	}
	iter, err := s.open(cons)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cons, s.iter, s.stop = cons, iter, make(chan struct{})
	return nil
}

func (s *subscriber) open(cons jetstream.Consumer) (jetstream.MessagesContext, error) {
	iter, err := cons.Messages(jetstream.PullMaxMessages(s.c.cfg.PullBatch))
	if err != nil {
		return nil, fmt.Errorf("consumer: pull from durable %s: %w", s.c.cfg.Consumer, err)
	}
	return iter, nil
}

// Subscribe implements message.Subscriber: it starts one worker.
func (s *subscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	s.mu.Lock()
	ready := s.cons != nil
	s.mu.Unlock()
	if !ready {
		return nil, errors.New("consumer: subscribe before start")
	}
	out := make(chan *message.Message)
	go s.work(ctx, out)
	return out, nil
}

// Close implements message.Subscriber. The router closes the subscriber
// once per handler; the drain has stopped pulling by then, and stopping
// again is harmless.
func (s *subscriber) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.iter != nil {
		s.iter.Stop()
		s.iter = nil
	}
	s.stopped = true
	return nil
}

func (s *subscriber) work(ctx context.Context, out chan<- *message.Message) {
	defer close(out)
	c := s.c
	for {
		m, err := s.next(ctx)
		if err != nil {
			// Drained: wait for the router to close, which it would
			// otherwise do by itself, logging an error, once every
			// worker ended.
			<-ctx.Done()
			return
		}
		last := c.isLast(m)
		if !c.admit(m, last) {
			continue
		}
		d := &delivery{msg: m, received: time.Now(), last: last, finished: c.work.done}
		wm := message.NewMessage(nuid.Next(), nil)
		wm.SetContext(context.WithValue(context.WithoutCancel(ctx), deliveryKey{}, d))
		select {
		case out <- wm:
		case <-ctx.Done():
			// The router is closing and will not take it.
			c.handBack(m)
			d.finish()
			return
		}
		select {
		case <-wm.Acked():
		case <-wm.Nacked():
		case <-ctx.Done():
			// The handler settles the message itself.
		}
		d.finish()
	}
}

// next takes the next message from the iterator. When the iterator fails
// (the durable was deleted, the connection closed) it is replaced after a
// pause, by whichever worker sees it first.
func (s *subscriber) next(ctx context.Context) (jetstream.Msg, error) {
	for {
		s.mu.Lock()
		iter, stop := s.iter, s.stop
		s.mu.Unlock()
		if iter == nil {
			return nil, errDrained
		}
		m, err := iter.Next(jetstream.NextContext(ctx))
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if s.c.draining.Load() {
			return nil, errDrained
		}
		s.c.log.Warn("pulling from the durable failed; retrying in 1s", "error", err)
		select {
		case <-time.After(time.Second):
		case <-stop:
			return nil, errDrained
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		if s.iter == iter && !s.stopped {
			iter.Stop()
			if fresh, err := s.open(s.cons); err == nil {
				s.iter = fresh
			} else {
				s.c.log.Warn("reopening the pull iterator failed", "error", err)
			}
		}
		s.mu.Unlock()
	}
}

// stopPulling stops fetching at once: the iterator is drained, so no
// further pull request is sent and the server, seeing no interest, delivers
// nothing more. What was already delivered to this process and no worker
// started is handed back (or, on its last delivery, processed). The
// returned channel is closed once all of it is.
func (s *subscriber) stopPulling() <-chan struct{} {
	done := make(chan struct{})
	s.mu.Lock()
	iter := s.iter
	s.iter, s.stopped = nil, true
	if s.stop != nil {
		close(s.stop)
		s.stop = nil
	}
	s.mu.Unlock()
	if iter == nil {
		close(done)
		return done
	}
	iter.Drain()
	go func() {
		defer close(done)
		c := s.c
		for {
			m, err := iter.Next(jetstream.NextMaxWait(c.cfg.DrainTimeout))
			if err != nil {
				return
			}
			last := c.isLast(m)
			if !c.admit(m, last) {
				continue
			}
			// Its last delivery: process it here, outside the router.
			d := &delivery{msg: m, received: time.Now(), last: true, finished: c.work.done}
			c.process(d)
			d.finish()
		}
	}()
	return done
}
