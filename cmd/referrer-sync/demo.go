package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/app"
)

const (
	demoToken    = "demo-access-token"
	demoTokenEnv = "REFERRER_SYNC_DEMO_TOKEN" //nolint:gosec // G101: the name of an environment variable, not a credential
)

// demoConfig is the built-in configuration of the demo: three campaigns,
// one per action, writing to the emulator.
func demoConfig(emulatorURL, listen string) string {
	return fmt.Sprintf(`
log: {level: error, format: text}
nats:
  url: ""
  workers: 4
http:
  listen: %q
connections:
  main:
    type: intercom
    base_url: %q
    access_token_env: %s
    api_version: "2.16"
campaigns:
  spring_launch:
    connection: main
    referrers:
      action: create_lead
      on_duplicate: update
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.referral_link}
        - {value: "Referral Factory", to: custom_attributes.lead_source}
  partners:
    connection: main
    referrers:
      action: create_user
      on_duplicate: skip
      fields:
        - {from: referrer.email, to: email}
        - {from: referrer.id, to: external_id}
        - {from: referrer.first_name, to: name}
        - {from: referrer.url, to: custom_attributes.referral_link}
        - {from: referrer.signed_up_at, to: signed_up_at}
  newsletter:
    connection: main
    referrers:
      action: nothing
`, listen, emulatorURL, demoTokenEnv)
}

type demoEvent struct {
	label string
	body  string
	msgID string // JetStream message id; a new one re-delivers the same event
}

func demoEvents() []demoEvent {
	ev := func(id, campaign, name, email, ref string) string {
		return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/campaigns/%s","type":"referrer.joined","time":"2026-11-28T10:00:00Z","datacontenttype":"application/json","data":{"campaign_id":%q,"campaign_name":"Demo","referrer":{"id":%q,"first_name":%q,"email":%q,"code":"C-%s","url":"https://refer.example.com/%s","source":"Widget","signed_up_at":"2026-11-28T09:59:58Z","meta":{"company":"Acme"}}}}`,
			id, campaign, campaign, ref, name, email, ref, ref)
	}
	return []demoEvent{
		{label: "Ada joins spring_launch", body: ev("evt-001", "spring_launch", "Ada", "Ada@Example.com", "usr_1")},
		{label: "Grace joins partners", body: ev("evt-002", "partners", "Grace", "grace@example.com", "usr_2")},
		{label: "Ada joins partners (exists: skip)", body: ev("evt-003", "partners", "Ada", "ada@example.com", "usr_1")},
		{label: "Grace joins spring_launch (exists: update)", body: ev("evt-004", "spring_launch", "Grace H.", "grace@example.com", "usr_2")},
		{label: "Linus joins newsletter", body: ev("evt-005", "newsletter", "Linus", "linus@example.com", "usr_3")},
		{label: "evt-001 delivered again", body: ev("evt-001", "spring_launch", "Ada", "Ada@Example.com", "usr_1"), msgID: "redelivery-of-evt-001"},
		{label: "unknown campaign", body: ev("evt-006", "winter_sale", "Alan", "alan@example.com", "usr_4")},
		{label: "malformed JSON", body: `{"specversion":"1.0","id":"evt-007",`},
		{label: "invalid email", body: ev("evt-008", "spring_launch", "Bob", "bob(at)example", "usr_5")},
	}
}

// cmdDemo runs the whole product on embedded parts: a JetStream server, the
// Intercom emulator and a built-in configuration; publishes sample events
// one at a time and prints what happened to each.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	keep := fs.Bool("keep-running", false, "keep the service, metrics and emulator running after the sample events")
	listen := fs.String("listen", "127.0.0.1:9464", "metrics and health address when --keep-running")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	emu, err := emulator.New(emulator.Config{
		Tokens: map[string]emulator.Workspace{demoToken: {ID: "demo", Attributes: []string{"referral_link", "lead_source"}}},
		Seed:   1,
	})
	if err != nil {
		return err
	}
	defer emu.Close()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = emuSrv.Serve(ln) }()
	defer func() { _ = emuSrv.Close() }() // the demo is over; its emulator has nothing left to lose
	emuURL := "http://" + ln.Addr().String()

	if err := os.Setenv(demoTokenEnv, demoToken); err != nil {
		return err
	}
	httpListen := "127.0.0.1:0"
	if *keep {
		httpListen = *listen
	}
	f, err := config.Parse([]byte(demoConfig(emuURL, httpListen)))
	if err != nil {
		return err
	}
	f.NATS.URL = "" // the demo is self-contained even where NATS_URL is set
	if err := f.Validate(); err != nil {
		return fmt.Errorf("built-in demo configuration: %w", err)
	}
	verdicts := make(chan app.Verdict, 64)
	in, err := start(ctx, f, options{
		logger:  newLogger(stderr, f.Log),
		observe: func(_ app.Message, v app.Verdict) { verdicts <- v },
	})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- in.run(runCtx) }()
	select {
	case <-in.consumer.Running():
	case err := <-done:
		return err
	}

	nc, err := nats.Connect(in.server.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	pub, err := consumer.NewPublisher(nc)
	if err != nil {
		return err
	}
	var out writes
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	out.println(tw, "#\tEVENT\tCAMPAIGN\tOUTCOME\tINTERCOM CONTACT\tNOTE")
	for i, de := range demoEvents() {
		headers := map[string]string{"Content-Type": consumer.ContentTypeCloudEvents}
		if _, err := pub.Publish(ctx, in.consCfg.Subject, []byte(de.body), de.msgID, headers); err != nil {
			return fmt.Errorf("publish sample event: %w", err)
		}
		v, err := awaitSettled(ctx, verdicts)
		if err != nil {
			return err
		}
		note := de.label
		if v.Reason != "" {
			note += " [" + v.Reason + "]"
		}
		out.printf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, orDash(v.EventID), orDash(v.Campaign), v.Outcome, orDash(v.ContactID), note)
	}
	out.err = out.done(tw.Flush())
	out.printf(stdout, "\nIntercom emulator now holds %d contacts. Dead letters are on %s.\n",
		len(emu.Contacts(demoToken)), in.consCfg.DeadLetterSubject)

	if *keep {
		out.printf(stdout, "Running: metrics http://%s/metrics, emulator %s, NATS %s. Ctrl-C to stop.\n", in.addr(), emuURL, in.server.URL())
		<-ctx.Done()
	}
	stop()
	if err := <-done; err != nil {
		return err
	}
	return out.err
}

func awaitSettled(ctx context.Context, verdicts <-chan app.Verdict) (app.Verdict, error) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case v := <-verdicts:
			if !v.Retry {
				return v, nil
			}
			slog.Debug("demo: delivery will be retried", "reason", v.Reason)
		case <-timeout:
			return app.Verdict{}, errors.New("demo: no outcome within 30s")
		case <-ctx.Done():
			return app.Verdict{}, ctx.Err()
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
