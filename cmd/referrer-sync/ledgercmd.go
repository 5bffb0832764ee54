package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/ledger"
	"github.com/referrer-sync/referrer-sync/domain"
	"github.com/referrer-sync/referrer-sync/ports"
)

const ledgerUsage = `Usage: referrer-sync ledger show --config FILE (--event ID [--connection NAME] | --email ADDRESS --connection NAME) [--json]

Prints what the exactly-once ledger holds: the person's record (their CRM
contact, a create whose outcome is not known yet, the outcomes of their recent
events), found by one of their events' ids or by their email. Emails are not
stored in the ledger (keys are hashes): --email is hashed to find the record.
`

// cmdLedger shows what the ledger knows of an event or a person. It only
// reads.
func cmdLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "show" {
		_, _ = fmt.Fprint(stderr, ledgerUsage) // help on stderr: nowhere else to report a failed write
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return usageError{errors.New("ledger needs the subcommand show")}
	}
	fs := flag.NewFlagSet("ledger show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { _, _ = fmt.Fprint(stderr, ledgerUsage); fs.PrintDefaults() }
	path := fs.String("config", "", "configuration `FILE`")
	event := fs.String("event", "", "an event `ID`: shows the record of the person it belongs to")
	email := fs.String("email", "", "a person's email `ADDRESS` (with --connection)")
	conn := fs.String("connection", "", "the connection `NAME` (required with --email)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("ledger show: unexpected argument %q", fs.Arg(0))}
	case (*event == "") == (*email == ""):
		return usageError{errors.New("ledger show needs exactly one of --event and --email")}
	case *email != "" && *conn == "":
		return usageError{errors.New("ledger show --email needs --connection: a person's record is per connection")}
	}
	f, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if f.NATS.URL == "" {
		return usageError{errors.New("nats.url is empty (embedded server); ledger show needs the NATS server the service uses (set nats.url or NATS_URL)")}
	}
	nc, err := nats.Connect(f.NATS.URL, nats.Name("referrer-sync-ledger"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	l, err := ledger.Open(ctx, js, f.Ledger.Bucket)
	if err != nil {
		return err
	}
	var people []ports.Person
	if *email != "" {
		addr, err := domain.NormalizeEmail(*email)
		if err != nil {
			return usageError{fmt.Errorf("--email: %w", err)}
		}
		p, err := l.Person(ctx, *conn, addr)
		if err != nil {
			return err
		}
		if p.Revision != 0 {
			people = append(people, p)
		}
	} else {
		all, err := l.All(ctx)
		if err != nil {
			return err
		}
		for _, p := range all {
			if (*conn == "" || p.Connection == *conn) && slices.ContainsFunc(p.Events, func(r ports.EventRecord) bool { return r.ID == *event }) {
				people = append(people, p)
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(people)
	}
	if len(people) == 0 {
		_, err := fmt.Fprintln(stdout, "the ledger holds nothing for it: never seen, forgotten after ledger.ttl, or a duplicate older than the 64 events kept per person")
		return err
	}
	for i, p := range people {
		if i > 0 {
			if _, err := fmt.Fprintln(stdout); err != nil {
				return err
			}
		}
		if err := writePerson(stdout, p); err != nil {
			return err
		}
	}
	return nil
}

func writePerson(w io.Writer, p ports.Person) error {
	var out writes
	who := "email not stored"
	if p.Email != "" {
		who = "key " + ledger.Key(p.Connection, p.Email)
	}
	out.printf(w, "person      connection %s, %s, revision %d\n", p.Connection, who, p.Revision)
	out.printf(w, "contact     %s\n", orDash(p.ContactID))
	if pd := p.Pending; pd != nil {
		state := "lease over: resolved by the next worker"
		if time.Now().Before(pd.NotAfter) {
			state = "in flight"
		}
		out.printf(w, "pending     create by event %s (%s) until %s, %s", pd.EventID, pd.Owner, pd.NotAfter.UTC().Format(time.RFC3339Nano), state)
		if pd.ExternalID != "" {
			out.print(w, ", with an external id")
		}
		out.println(w)
	} else {
		out.println(w, "pending     -")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	out.println(tw, "EVENT\tOUTCOME\tCONTACT\tAT\tFAILURES\tREASON\tCOUNTED BY")
	for _, r := range p.Events {
		outcome := string(r.Outcome)
		if outcome == "" {
			outcome = "(failing)"
		}
		out.printf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, outcome, orDash(r.ContactID), r.At.UTC().Format(time.RFC3339),
			r.Failures, orDash(r.Reason), orDash(r.CountedBy))
	}
	return out.done(tw.Flush())
}
