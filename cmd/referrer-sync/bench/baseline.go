package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// runBaseline consumes the first n events of the main stream with the raw
// nats.go jetstream pull consumer (Consume, its default buffering) and a
// double ack per message, doing nothing else: the broker's own
// consume-and-ack rate, which bounds everything the service can do.
func (e *Env) runBaseline(ctx context.Context, name string, n int) (Result, error) {
	nc, err := e.connect("bench-baseline")
	if err != nil {
		return Result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Result{}, err
	}
	durable := e.name("baseline")
	cons, err := js.CreateOrUpdateConsumer(ctx, mainStream, jetstream.ConsumerConfig{
		Durable: durable, FilterSubject: mainSubject, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	})
	if err != nil {
		return Result{}, fmt.Errorf("bench: baseline consumer: %w", err)
	}
	defer e.deleteConsumer(mainStream, durable)

	s := newSample(n)
	s.begin()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		received := time.Now()
		var published time.Time
		if md, err := m.Metadata(); err == nil {
			published = md.Timestamp
		}
		if err := m.DoubleAck(ctx); err != nil {
			return // redelivered after AckWait; the run then counts it once
		}
		s.finish("acked", published, received)
	})
	if err != nil {
		return Result{}, fmt.Errorf("bench: baseline consume: %w", err)
	}
	defer cc.Stop()
	if err := s.wait(ctx, n); err != nil {
		return Result{}, err
	}
	return s.result(name), nil
}
