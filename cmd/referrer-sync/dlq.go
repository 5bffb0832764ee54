package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/consumer"
)

const dlqUsage = `Usage: referrer-sync dlq list|show|replay --config FILE [filters] [flags]

  list     one line per dead letter (--json: one JSON object per line)
  show     every matching dead letter in full: headers and body
  replay   republish matching dead letters to nats.subject, with their original
           headers, so the service processes them again; events already applied
           are absorbed as duplicates. Needs a filter or --all. Dead letters stay
           on the dead-letter stream unless --purge is given.

Filters (combined with AND; dead letters are read oldest first):
  --campaign C   Referrer-Sync-Campaign is C (when the service did not record it, as for
                 invalid input, the campaign_id in the body)
  --id ID        Referrer-Sync-Event-Id is ID (when not recorded, the CloudEvents id in the body)
  --reason R     Referrer-Sync-Reason is R (malformed, invalid_email, crm_rejected, attempts_exhausted, ...)
  --since T      failed at or after T: RFC 3339 (2026-11-28T10:00:00Z), a date (2026-11-28, UTC)
                 or a duration meaning that long ago (24h)
  --limit N      at most the first N matches

Run "referrer-sync dlq list|show|replay -h" for each subcommand's flags.
`

// replayedFromHeader names the dead-letter sequence a replayed message
// came from, so the service's logs and a later dead letter can be traced
// back to it.
const replayedFromHeader = "Referrer-Sync-Replayed-From"

// dlqOptions are the dlq command's filters and switches.
type dlqOptions struct {
	campaign, id, reason string
	since                time.Time // zero: no lower bound
	limit                int       // 0: no limit
	json                 bool      // list
	all, dryRun, purge   bool      // replay
}

func (o dlqOptions) filtered() bool {
	return o.campaign != "" || o.id != "" || o.reason != "" || !o.since.IsZero()
}

func (o dlqOptions) match(d deadLetter) bool {
	switch {
	case o.campaign != "" && d.Campaign != o.campaign,
		o.id != "" && d.EventID != o.id,
		o.reason != "" && d.header(consumer.HeaderReason) != o.reason,
		!o.since.IsZero() && d.failedAt().Before(o.since):
		return false
	}
	return true
}

// cmdDLQ inspects the dead-letter stream and replays dead letters.
func cmdDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("dlq needs a subcommand: list, show or replay (referrer-sync dlq -h)")}
	}
	op := args[0]
	switch op {
	case "list", "show", "replay":
	case "-h", "-help", "--help", "help":
		if _, err := fmt.Fprint(stdout, dlqUsage); err != nil {
			return err
		}
		return flag.ErrHelp
	default:
		if strings.HasPrefix(op, "-") {
			return usageError{fmt.Errorf("dlq needs a subcommand before its flags: list, show or replay (got %q)", op)}
		}
		return usageError{fmt.Errorf("dlq: unknown subcommand %q; want list, show or replay", op)}
	}
	fs := flag.NewFlagSet("dlq "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "Usage: referrer-sync dlq %s --config FILE [flags]\n\nFlags:\n", op) // help on stderr: nowhere else to report a failed write
		fs.PrintDefaults()
	}
	var o dlqOptions
	path := fs.String("config", "", "configuration file (YAML) naming the NATS URL, subject and dead-letter stream")
	fs.StringVar(&o.campaign, "campaign", "", "only dead letters of this campaign id")
	fs.StringVar(&o.id, "id", "", "only dead letters of this event id")
	fs.StringVar(&o.reason, "reason", "", "only dead letters with this reason")
	since := fs.String("since", "", "only dead letters that failed at or after this time (RFC 3339, date, or a duration ago such as 24h)")
	fs.IntVar(&o.limit, "limit", 0, "at most this many dead letters (0: no limit)")
	switch op {
	case "list":
		fs.BoolVar(&o.json, "json", false, "one JSON object per line instead of a table")
	case "replay":
		fs.BoolVar(&o.all, "all", false, "replay every dead letter (required when no filter is given)")
		fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be replayed and publish nothing")
		fs.BoolVar(&o.purge, "purge", false, "delete each dead letter once the stream has acknowledged its republish")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("dlq %s: unexpected argument %q", op, fs.Arg(0))}
	}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return usageError{err}
		}
		o.since = t
	}
	if o.limit < 0 {
		return usageError{fmt.Errorf("--limit %d is negative", o.limit)}
	}
	f, err := loadConfig(*path)
	if err != nil {
		return err
	}
	return runDLQ(ctx, f, op, o, stdout)
}

// parseSince reads --since: an RFC 3339 time, a date (midnight UTC) or a
// duration meaning that long before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q is neither an RFC 3339 time (2026-11-28T10:00:00Z), a date (2026-11-28) nor a duration (24h)", s)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("--since %q: a duration means that long ago and must not be negative", s)
	}
	return now.Add(-d), nil
}

// runDLQ runs one dlq subcommand with an already loaded configuration.
func runDLQ(ctx context.Context, f *config.File, op string, o dlqOptions, w io.Writer) error {
	if op == "replay" {
		if !o.filtered() && !o.all {
			return usageError{errors.New("replay needs a filter (--campaign, --id, --reason, --since) or --all, so that nothing is replayed by accident")}
		}
		if o.filtered() && o.all {
			return usageError{errors.New("replay: --all cannot be combined with a filter; drop --all to replay only what the filters match")}
		}
	}
	if f.NATS.URL == "" {
		msg := "nats.url is empty (embedded server); dlq needs the NATS server the service uses (set nats.url or NATS_URL)"
		if v, ok := os.LookupEnv("NATS_URL"); ok && v == "" {
			msg += "; NATS_URL is set but empty, which overrides the file"
		}
		return usageError{errors.New(msg)}
	}
	names := consumer.Config{
		Stream:            f.NATS.Stream,
		Subject:           f.NATS.Subject,
		DeadLetterSubject: f.NATS.DeadLetterSubject,
		DeadLetterStream:  f.NATS.DeadLetterStream,
	}.WithDefaults()

	nc, err := nats.Connect(f.NATS.URL, nats.Name("referrer-sync-dlq"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	stream, err := js.Stream(ctx, names.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("dead-letter stream %s does not exist: the service has not run against this server, or nats.dead_letter_stream names another stream: %w", names.DeadLetterStream, err)
	}
	if err != nil {
		return fmt.Errorf("look up dead-letter stream %s: %w", names.DeadLetterStream, err)
	}
	state := stream.CachedInfo().State
	if state.Msgs == 0 {
		_, err := fmt.Fprintf(w, "dead-letter stream %s is empty\n", names.DeadLetterStream)
		return err
	}
	dls, limited, err := readDeadLetters(ctx, stream, state.FirstSeq, state.LastSeq, o)
	if err != nil {
		return err
	}
	scope := fmt.Sprintf("of %d in %s", state.Msgs, names.DeadLetterStream)
	if limited {
		scope += fmt.Sprintf(", stopped at --limit %d", o.limit)
	}
	switch op {
	case "list":
		return listDeadLetters(w, dls, o.json, scope)
	case "show":
		return showDeadLetters(w, dls, names.DeadLetterStream, scope)
	default:
		return replayDeadLetters(ctx, w, js, stream, dls, names, o, scope)
	}
}

// deadLetter is one message of the dead-letter stream.
type deadLetter struct {
	Seq     uint64
	Subject string
	Stored  time.Time
	Header  nats.Header
	Data    []byte
	// EventID and Campaign are the service's headers or, when it did not
	// record them (it does not for input that fails validation, such as
	// an invalid email), what the body says.
	EventID, Campaign string
}

func newDeadLetter(m *jetstream.RawStreamMsg) deadLetter {
	d := deadLetter{Seq: m.Sequence, Subject: m.Subject, Stored: m.Time, Header: m.Header, Data: m.Data}
	if d.Header == nil {
		d.Header = nats.Header{}
	}
	d.EventID, d.Campaign = d.header(consumer.HeaderEventID), d.header(consumer.HeaderCampaign)
	if d.EventID == "" || d.Campaign == "" {
		id, campaign := eventOfBody(d)
		if d.EventID == "" {
			d.EventID = id
		}
		if d.Campaign == "" {
			d.Campaign = campaign
		}
	}
	return d
}

// eventOfBody reads the event id and campaign id from a CloudEvent,
// structured or binary (ce-id header, data as the body), as far as it can.
func eventOfBody(d deadLetter) (id, campaign string) {
	var data struct {
		CampaignID any `json:"campaign_id"`
	}
	body := d.Data
	if ceID := headerFold(d.Header, "ce-id"); ceID != "" {
		id = ceID
	} else {
		var env struct {
			ID   any             `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &env) != nil {
			return "", ""
		}
		id, body = jsonString(env.ID), env.Data
	}
	if json.Unmarshal(body, &data) == nil {
		campaign = jsonString(data.CampaignID)
	}
	return strings.TrimSpace(id), strings.TrimSpace(campaign)
}

func jsonString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// headerFold is a header's first value, its name matched without regard
// to case (the service stores the original headers lower-cased).
func headerFold(h nats.Header, name string) string {
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

func (d deadLetter) header(k string) string { return d.Header.Get(k) }

// failedAt is when the service dead-lettered the message, or when the
// stream stored it if the header is missing or unreadable.
func (d deadLetter) failedAt() time.Time {
	if t, err := time.Parse(time.RFC3339Nano, d.header(consumer.HeaderFailedAt)); err == nil {
		return t
	}
	return d.Stored
}

// readDeadLetters reads the stream from first to last (a snapshot: later
// messages are left for the next run) with direct message gets, which
// create no consumer and skip deleted messages. It stops after o.limit
// matches and reports whether it did.
func readDeadLetters(ctx context.Context, s jetstream.Stream, first, last uint64, o dlqOptions) ([]deadLetter, bool, error) {
	var out []deadLetter
	for seq := first; seq <= last; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // nothing at or after seq any more (deleted or aged out meanwhile)
		}
		if err != nil {
			return nil, false, fmt.Errorf("read dead letter at sequence %d: %w", seq, err)
		}
		if m.Sequence > last {
			break
		}
		seq = m.Sequence + 1
		d := newDeadLetter(m)
		if !o.match(d) {
			continue
		}
		out = append(out, d)
		if o.limit > 0 && len(out) == o.limit {
			return out, seq <= last, nil
		}
	}
	return out, false, nil
}

// dlqEntry is the --json form of one dead letter.
type dlqEntry struct {
	Sequence         uint64    `json:"dlq_sequence"`
	StoredAt         time.Time `json:"stored_at"`
	FailedAt         time.Time `json:"failed_at"`
	Reason           string    `json:"reason"`
	EventID          string    `json:"event_id"`
	Campaign         string    `json:"campaign"`
	Attempts         int       `json:"attempts"`
	OriginalSubject  string    `json:"original_subject"`
	OriginalSequence uint64    `json:"original_sequence"`
	Message          string    `json:"message"`
	BodyBytes        int       `json:"body_bytes"`
}

func entryOf(d deadLetter) dlqEntry {
	attempts, _ := strconv.Atoi(d.header(consumer.HeaderAttempts))
	origSeq, _ := strconv.ParseUint(d.header(consumer.HeaderStreamSequence), 10, 64)
	return dlqEntry{
		Sequence:         d.Seq,
		StoredAt:         d.Stored.UTC(),
		FailedAt:         d.failedAt().UTC(),
		Reason:           d.header(consumer.HeaderReason),
		EventID:          d.EventID,
		Campaign:         d.Campaign,
		Attempts:         attempts,
		OriginalSubject:  d.header(consumer.HeaderOriginalSubject),
		OriginalSequence: origSeq,
		Message:          d.header(consumer.HeaderMessage),
		BodyBytes:        len(d.Data),
	}
}

const listHeader = "DLQ SEQ\tFAILED AT\tREASON\tEVENT\tCAMPAIGN\tATTEMPTS\tORIG SEQ\tMESSAGE"

func listRow(d deadLetter) string {
	return strings.Join([]string{
		strconv.FormatUint(d.Seq, 10),
		d.failedAt().UTC().Format(time.RFC3339),
		cell(d.header(consumer.HeaderReason), 0),
		cell(d.EventID, 40),
		cell(d.Campaign, 30),
		cell(d.header(consumer.HeaderAttempts), 0),
		cell(d.header(consumer.HeaderStreamSequence), 0),
		cell(d.header(consumer.HeaderMessage), 60),
	}, "\t")
}

func listDeadLetters(w io.Writer, dls []deadLetter, asJSON bool, scope string) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, d := range dls {
			if err := enc.Encode(entryOf(d)); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		return nil
	}
	if len(dls) > 0 {
		var out writes
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		out.println(tw, listHeader)
		for _, d := range dls {
			out.println(tw, listRow(d))
		}
		if err := out.done(tw.Flush()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	_, err := fmt.Fprintf(w, "%s (%s)\n", deadLetters(len(dls)), scope)
	return err
}

func showDeadLetters(w io.Writer, dls []deadLetter, stream, scope string) error {
	var b bytes.Buffer
	for i, d := range dls {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "=== dead letter %d (stream %s, subject %s, stored %s)\n", d.Seq, stream, printable(d.Subject, oneLine), d.Stored.UTC().Format(time.RFC3339Nano))
		fmt.Fprintf(&b, "event %s%s, campaign %s%s, reason %s, failed at %s\n",
			cell(d.EventID, 0), fromBody(d, consumer.HeaderEventID, d.EventID),
			cell(d.Campaign, 0), fromBody(d, consumer.HeaderCampaign, d.Campaign),
			cell(d.header(consumer.HeaderReason), 0), d.failedAt().UTC().Format(time.RFC3339Nano))
		b.WriteString("headers:\n")
		keys := make([]string, 0, len(d.Header))
		for k := range d.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range d.Header[k] {
				fmt.Fprintf(&b, "  %s: %s\n", printable(k, oneLine), printable(v, oneLine))
			}
		}
		body, kind := renderBody(d.Data)
		fmt.Fprintf(&b, "body (%d bytes, %s):\n", len(d.Data), kind)
		for line := range strings.SplitSeq(body, "\n") {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	fmt.Fprintf(&b, "%s (%s)\n", deadLetters(len(dls)), scope)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// deadLetters is "1 dead letter" or "n dead letters".
func deadLetters(n int) string {
	if n == 1 {
		return "1 dead letter"
	}
	return fmt.Sprintf("%d dead letters", n)
}

// fromBody marks a value that was read from the body because the service
// did not record it in the header.
func fromBody(d deadLetter, header, value string) string {
	if value != "" && d.header(header) == "" {
		return " (from the body)"
	}
	return ""
}

// renderBody pretty-prints a JSON body and escapes anything else so that a
// terminal shows it safely.
func renderBody(data []byte) (string, string) {
	if len(data) == 0 {
		return "", "empty"
	}
	if json.Valid(data) {
		var b bytes.Buffer
		if err := json.Indent(&b, data, "", "  "); err == nil {
			return printable(b.String(), jsonText), "JSON"
		}
	}
	return printable(string(data), plainText), "not JSON, escaped"
}

// textMode says how printable treats line feeds and backslashes.
type textMode int

const (
	oneLine   textMode = iota // header values, table cells: everything escaped onto one line
	plainText                 // a body that is not JSON: line feeds kept, backslashes escaped so the text is unambiguous
	jsonText                  // an indented JSON document: line feeds kept, its backslashes are escapes already
)

// printable escapes what a terminal should not interpret: control and
// other non-printable characters and invalid UTF-8.
func printable(s string, mode textMode) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' && mode != oneLine:
			b.WriteByte('\n')
		case r == '\\' && mode == plainText:
			b.WriteString(`\\`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// cell is a table cell: printable, on one line, "-" when empty, cut to
// width runes (0: no cut).
func cell(s string, width int) string {
	if s == "" {
		return "-"
	}
	s = printable(s, oneLine)
	if width > 0 && utf8.RuneCountInString(s) > width {
		r := []rune(s)
		s = string(r[:width-1]) + "…"
	}
	return s
}

// replayMsg is the message a dead letter is replayed as: its body and its
// original headers, without the service's own and the server's, plus the
// dead letter it came from and a message id that makes a second replay of
// the same dead letter within the stream's duplicate window a no-op.
func replayMsg(d deadLetter, subject, dlqStream string) *nats.Msg {
	msg := nats.NewMsg(subject)
	msg.Data = d.Data
	for k, vs := range d.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "referrer-sync-") || strings.HasPrefix(lk, "nats-") {
			continue
		}
		msg.Header[k] = slices.Clone(vs)
	}
	msg.Header.Set(replayedFromHeader, strconv.FormatUint(d.Seq, 10))
	msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("replay-%s-%d", dlqStream, d.Seq))
	return msg
}

func replayDeadLetters(ctx context.Context, w io.Writer, js jetstream.JetStream, dlq jetstream.Stream, dls []deadLetter, names consumer.Config, o dlqOptions, scope string) error {
	if len(dls) == 0 {
		_, err := fmt.Fprintf(w, "no dead letters match (%s); nothing replayed\n", scope)
		return err
	}
	if o.dryRun {
		if err := listDeadLetters(w, dls, false, scope); err != nil {
			return err
		}
		then := ""
		if o.purge {
			then = " and deleted from " + names.DeadLetterStream
		}
		_, err := fmt.Fprintf(w, "dry run: %s would be replayed to %s%s; nothing was published\n", deadLetters(len(dls)), names.Subject, then)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "DLQ SEQ\tEVENT\tCAMPAIGN\tREASON\tSTREAM\tNEW SEQ\tDUPLICATE"
	if o.purge {
		head += "\tDELETED"
	}
	// The table is written as the replay goes; a write error is reported
	// at the end, after the replay error if there is one.
	var out writes
	out.println(tw, head)
	var replayed, duplicates, deleted int
	summary := func() {
		if err := tw.Flush(); err != nil && out.err == nil {
			out.err = err
		}
		out.printf(w, "replayed %d of %s to %s (%d stored, %d already stored: duplicate)", replayed, deadLetters(len(dls)), names.Subject, replayed-duplicates, duplicates)
		if o.purge {
			out.printf(w, "; deleted %d from %s", deleted, names.DeadLetterStream)
		}
		out.println(w)
	}
	for _, d := range dls {
		ack, err := js.PublishMsg(ctx, replayMsg(d, names.Subject, names.DeadLetterStream))
		if err != nil {
			summary()
			return fmt.Errorf("replay dead letter %d to %s (it stays on %s): %w", d.Seq, names.Subject, names.DeadLetterStream, err)
		}
		replayed++
		if ack.Duplicate {
			duplicates++
		}
		row := fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%d\t%t", d.Seq, cell(d.EventID, 40),
			cell(d.Campaign, 30), cell(d.header(consumer.HeaderReason), 0), ack.Stream, ack.Sequence, ack.Duplicate)
		if o.purge {
			// Only now that the stream has acknowledged the republish.
			if err := dlq.DeleteMsg(ctx, d.Seq); err != nil {
				// Already gone (a concurrent replay --purge) is as good as deleted.
				if _, gerr := dlq.GetMsg(ctx, d.Seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
					out.println(tw, row+"\tfailed")
					summary()
					return fmt.Errorf("delete dead letter %d from %s after replaying it: %w", d.Seq, names.DeadLetterStream, err)
				}
			}
			deleted++
			row += "\tyes"
		}
		out.println(tw, row)
	}
	summary()
	if out.err != nil {
		return fmt.Errorf("replayed %d of %s, but the report was cut: %w", replayed, deadLetters(len(dls)), out.err)
	}
	return nil
}
