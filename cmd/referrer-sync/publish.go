package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/domain"
)

// cmdPublish publishes one CloudEvents JSON file, for operators checking a
// deployment end to end, through watermill-nats's publisher
// (consumer.Publisher). The event id becomes the JetStream message id, so
// publishing the same file twice within the stream's duplicate window
// stores it once.
func cmdPublish(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file (YAML) naming the NATS URL and subject")
	file := fs.String("file", "", "CloudEvents JSON file to publish")
	force := fs.Bool("force", false, "publish even if the event does not decode (to test dead-lettering)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *file == "" {
		return usageError{errors.New("--file EVENT.json is required")}
	}
	f, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if f.NATS.URL == "" {
		return usageError{errors.New("nats.url is empty (embedded server); publish needs a NATS server reachable from this process (set nats.url or NATS_URL)")}
	}
	body, err := os.ReadFile(*file)
	if err != nil {
		return usageError{err}
	}
	ev, derr := domain.DecodeEvent(body, nil)
	if derr != nil && !*force {
		return usageError{fmt.Errorf("%s: %w (use --force to publish it anyway)", *file, derr)}
	}
	nc, err := nats.Connect(f.NATS.URL, nats.Name("referrer-sync-publish"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	pub, err := consumer.NewPublisher(nc)
	if err != nil {
		return err
	}
	subject := f.NATS.Subject
	if subject == "" {
		subject = "referrer.joined"
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := pub.Publish(pctx, subject, body, ev.ID, map[string]string{"Content-Type": consumer.ContentTypeCloudEvents})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	seq := "unknown (another message on the subject came after it)"
	if r.Sequence != 0 {
		seq = strconv.FormatUint(r.Sequence, 10)
	}
	_, err = fmt.Fprintf(stdout, "published %s to %s: stream %s sequence %s duplicate=%s\n", *file, subject, r.Stream, seq, r.Duplicate)
	return err
}
