// Package csvsource is the csv source plugin: it reads a CRM export (a CSV
// file with a header row) into customers, and optionally an events export
// into events, and with watch on keeps the stream open and re-reads a file
// when it changes.
//
// Values: an empty cell (or one of only spaces) is a missing trait and is
// left out of the customer's traits — never sent as a null, which would
// remove a value the customer already has. A cell that does not parse as
// its column's type is reported as an sdk.Problem (line, column, trait) and
// only that trait is skipped; a row without an id, with a duplicate id (the
// first row wins), with the wrong number of fields or broken quoting is
// reported and skipped. Good rows always load.
//
// Events: each row of the events file is an sdk.Event; a row without an
// id, customer or name, or with a time or value that does not parse, is
// reported and skipped. Events go after the customers file's rows.
//
// Cursor: the SHA-256 of each file's content, plus the byte offset of the
// last row sent while a version is being streamed, so a restart resumes
// after the last committed batch. See cursor.
package csvsource

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in SourceInfo.
const Version = "0.1.0"

const (
	// defaultDebounce is how long the file must be quiet after a change
	// before it is re-read.
	defaultDebounce = 500 * time.Millisecond
	// maxRereads bounds how often one sync starts over because the file
	// changed while it was read.
	maxRereads = 5
)

// Source reads a CSV file. The zero value is not usable: call New.
type Source struct {
	log      *slog.Logger
	debounce time.Duration

	// afterWatchSync, if set (by tests), is called after each re-read that
	// a change triggered.
	afterWatchSync func(error)

	mu    sync.Mutex
	state *state
	// base holds the ids of the last version streamed in full, for
	// delete_missing.
	base *baseline
}

var (
	_ sdk.Source     = (*Source)(nil)
	_ sdk.FlatSource = (*Source)(nil)
)

// state is what Configure produced; it is not changed afterwards.
type state struct {
	set   *settings
	sc    *schema
	basis string
	// fingerprint describes everything in the config that changes what is
	// sent for the same file. It is hashed with the file's content, so a
	// cursor stops matching when the config changes (a new id column, a
	// renamed trait) even if the file did not.
	fingerprint []byte
	// ev is the events file's schema; nil when there is none.
	ev *eventSchema
}

type baseline struct {
	hash string
	ids  map[string]int32
}

// Option configures a Source.
type Option func(*Source)

// WithLogger sets the logger. The default is sdk.Logger(): JSON lines on
// stderr, which the daemon reads.
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// New returns an unconfigured Source.
func New(opts ...Option) *Source {
	s := &Source{log: sdk.Logger(), debounce: defaultDebounce}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Configure checks the config, reads the file's header, infers column types
// and returns the trait schema.
func (s *Source) Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	set, err := parseConfig(req.Config)
	if err != nil {
		return sdk.SourceInfo{}, err
	}
	start := time.Now()
	sc, err := buildSchema(ctx, set)
	if err != nil {
		return sdk.SourceInfo{}, err
	}
	s.log.Info("schema ready", "path", set.path, "traits", len(sc.traits), "rows_scanned", sc.rows, "took", time.Since(start).Round(time.Millisecond).String())
	st := &state{set: set, sc: sc, basis: "csv import " + filepath.Base(set.path), fingerprint: fingerprint(set, sc)}
	info := sdk.SourceInfo{
		Name:    "csv",
		Version: Version,
		Traits:  append([]sdk.Trait(nil), sc.traits...),
		Contact: sc.contact,
	}
	if set.events != nil {
		start := time.Now()
		if st.ev, err = buildEventSchema(ctx, set); err != nil {
			return sdk.SourceInfo{}, err
		}
		info.EventNames = append([]string(nil), st.ev.list...)
		s.log.Info("events ready", "path", set.events.path, "names", len(st.ev.list), "names_from_file", !st.ev.declared,
			"rows_scanned", st.ev.rows, "took", time.Since(start).Round(time.Millisecond).String())
	}
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	return info, nil
}

// Pull is PullFlat with each batch in map form (a Batch of its own, which
// may be kept).
func (s *Source) Pull(ctx context.Context, cursorText string, send func(*sdk.Batch) error) error {
	return s.PullFlat(ctx, cursorText, func(fb *sdk.FlatBatch) error { return send(mapBatch(fb)) })
}

// mapBatch returns fb in map form as a Batch of its own: fb is reused for
// the next batch, so the lists FlatBatch.Batch shares with it are copied
// (empty ones as nil), and a customer without traits gets an empty map.
func mapBatch(fb *sdk.FlatBatch) *sdk.Batch {
	b := fb.Batch()
	b.Deletes, b.Events = cloneOrNil(b.Deletes), cloneOrNil(b.Events)
	b.Consents, b.Problems = cloneOrNil(b.Consents), cloneOrNil(b.Problems)
	for i := range b.Customers {
		if b.Customers[i].Traits == nil {
			b.Customers[i].Traits = map[string]sdk.Value{}
		}
	}
	return b
}

func cloneOrNil[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// PullFlat streams the files from cursor on: the customers file, then the
// events file. With watch off it returns after the batch marked CaughtUp;
// with watch on it then waits for either file to change and streams each
// new version, until ctx is done. It builds every batch of the stream in
// one FlatBatch, whose names are the schema's traits in column order.
func (s *Source) PullFlat(ctx context.Context, cursorText string, send func(*sdk.FlatBatch) error) error {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st == nil {
		return sdk.Errorf(sdk.InvalidArgument, "", "csv: Pull called before Configure")
	}
	cur, ok := parseCursor(cursorText)
	if !ok && cursorText != "" {
		s.log.Warn("cursor not recognised; reading the whole file", "cursor", cursorText)
	}
	var w *watcher
	if st.set.watch {
		// Watch before the first read, so a change made during it is seen.
		paths := []string{st.set.path}
		if st.ev != nil {
			paths = append(paths, st.ev.set.path)
		}
		var err error
		if w, err = newWatcher(paths, s.log); err != nil {
			return err
		}
		defer w.Close()
	}
	var sendErr error
	fb := &sdk.FlatBatch{}
	for _, c := range st.sc.cols {
		fb.Names = append(fb.Names, c.trait) // column k's trait is name k
	}
	p := &puller{s: s, st: st, cur: cur, fb: fb, send: func(b *sdk.FlatBatch) error {
		if err := send(b); err != nil {
			sendErr = err
			return err
		}
		return nil
	}}
	if err := p.sync(ctx, true); err != nil {
		var he *headerError
		if errors.As(err, &he) {
			return sdk.Errorf(sdk.InvalidConfig, he.field, "%s: %s: %s; fix the file or the config", he.field, he.path, he.msg)
		}
		return err
	}
	if w == nil {
		return nil
	}
	for {
		if err := w.wait(ctx, s.debounce); err != nil {
			return err
		}
		err := p.sync(ctx, false)
		if s.afterWatchSync != nil {
			s.afterWatchSync(err)
		}
		switch {
		case err == nil:
		case sendErr != nil:
			return sendErr
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			// The stream stays open: the next change may fix the file.
			s.log.Error("cannot load the changed file; waiting for the next change", "err", err)
			var he *headerError
			if errors.As(err, &he) {
				fb.Reset()
				fb.Problems = append(fb.Problems, sdk.Problem{Line: 1, Message: he.label + "line 1: " + he.msg + "; file not loaded"})
				if err := send(fb); err != nil {
					return err
				}
			}
		}
	}
}

// puller is one Pull call's progress.
type puller struct {
	s   *Source
	st  *state
	cur cursor // what the host has committed (the last cursor sent)
	// fb is the stream's one FlatBatch, reset before each batch.
	fb   *sdk.FlatBatch
	send func(*sdk.FlatBatch) error
}

// sync brings the host up to date with the file. On the first sync it
// sends a batch marked CaughtUp even when nothing changed.
func (p *puller) sync(ctx context.Context, first bool) error {
	for attempt := 1; ; attempt++ {
		err := p.syncOnce(ctx, first)
		if !errors.Is(err, errChanged) {
			return err
		}
		path := p.st.set.path
		if ce := (*changedError)(nil); errors.As(err, &ce) {
			path = ce.path
		}
		if attempt == maxRereads {
			return fmt.Errorf("csv: %s kept changing while it was read (%d tries); write it to a temporary file and rename it into place", path, attempt)
		}
		p.s.log.Info("file changed while it was read; reading it again", "path", path)
	}
}

var errChanged = errors.New("file changed while it was read")

// changedError is errChanged for one file.
type changedError struct{ path string }

func (e *changedError) Error() string { return e.path + ": " + errChanged.Error() }
func (e *changedError) Unwrap() error { return errChanged }

func (p *puller) syncOnce(ctx context.Context, first bool) error {
	set := p.st.set
	cust, err := p.open(ctx, set.path, "path", p.st.fingerprint, 0, first)
	if err != nil {
		return err
	}
	if cust != nil {
		defer cust.f.Close()
	}
	var ev *fileVersion
	if es := p.st.ev; es != nil {
		if ev, err = p.open(ctx, es.set.path, "events.path", es.fingerprint, p.cur.ev.mark(), first); err != nil {
			return err
		}
		if ev != nil {
			defer ev.f.Close()
		}
	}
	// A file that is gone (only after the first sync) is waited for; the
	// other is still loaded.
	custDone := cust == nil || (p.cur.hash == cust.hash && !p.cur.partial)
	evp := planEvents(p.cur.ev, ev)
	if custDone && !evp.need {
		if !first {
			return nil // touched, not changed
		}
		if !set.raw.DeleteMissing {
			// The committed cursor again: a host that stores the cursor of
			// every batch must not lose it.
			p.fb.Reset()
			p.fb.CaughtUp, p.fb.Cursor = true, p.cur.String()
			return p.send(p.fb)
		}
	}
	if !custDone || (first && set.raw.DeleteMissing) {
		if err := p.syncCustomers(ctx, cust, custDone, !evp.need); err != nil {
			return err
		}
	}
	if evp.need {
		return p.syncEvents(ctx, ev, evp)
	}
	return nil
}

// emit sends b and records its cursor as committed. A batch that is not
// the CaughtUp one and carries nothing new, not even a cursor, is not sent.
func (p *puller) emit(b *sdk.FlatBatch) error {
	if !b.CaughtUp && len(b.Customers)+len(b.Deletes)+len(b.Events)+len(b.Consents)+len(b.Problems) == 0 && b.Cursor == p.cur.String() {
		return nil
	}
	if err := p.send(b); err != nil {
		return err
	}
	if b.Cursor != "" {
		p.cur, _ = parseCursor(b.Cursor)
	}
	return nil
}

// syncCustomers streams the customers file v. upToDate says the host has
// committed it already (the ids are read for delete_missing, nothing is
// sent but the final batch); last, that no events follow.
func (p *puller) syncCustomers(ctx context.Context, v *fileVersion, upToDate, last bool) error {
	set, s := p.st.set, p.s
	str := &streamer{
		sc:          p.st.sc,
		delimiter:   set.delimiter,
		batch:       set.batch,
		hash:        v.hash,
		prev:        p.cur.committed(),
		ev:          p.cur.ev,
		last:        last,
		consentTime: v.before.ModTime().UTC(),
		basis:       p.st.basis,
		sizeHint:    p.st.sc.rows,
		fb:          p.fb,
		emit:        p.emit,
		beforeFinal: v.unchanged,
		onPlan: func(pl *plan) {
			if len(pl.missing) > 0 {
				s.log.Warn("columns of the schema are not in the file any more; their traits are left as they were", "path", set.path, "columns", pl.missing)
			}
			if len(pl.extra) > 0 {
				s.log.Warn("columns not in the schema are ignored; restart the source to add them", "path", set.path, "columns", pl.extra)
			}
		},
	}
	switch {
	case upToDate:
		// delete_missing needs the ids of the committed version, which is
		// this one: read them, send nothing but the final batch.
		str.resume = math.MaxInt64
		str.prev = ""
	case p.cur.hash == v.hash && p.cur.partial:
		str.resume = p.cur.offset
		str.prev = p.cur.prev
	}
	if set.raw.DeleteMissing {
		s.mu.Lock()
		if s.base != nil && s.base.hash == str.prev && str.prev != "" {
			str.baseline = s.base.ids
		}
		s.mu.Unlock()
		if str.baseline == nil && str.prev != "" {
			s.log.Warn("delete_missing: the ids of the previous version are not known (the plugin restarted); customers missing from this version are not deleted", "path", set.path)
		}
	}
	str.keepIDs = set.raw.DeleteMissing
	if _, err := v.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	start := time.Now()
	ids, err := str.run(ctx, v.f)
	if err != nil {
		var he *headerError
		if errors.As(err, &he) {
			he.field, he.path = "path", set.path
		}
		return err
	}
	if !upToDate {
		s.log.Info("file loaded", "path", set.path, "customers", str.stats.customers, "problems", str.stats.problems,
			"consents", str.stats.consents, "deletes", str.stats.deletes, "resumed_at", str.resume, "took", time.Since(start).Round(time.Millisecond).String())
	}
	if set.raw.DeleteMissing {
		s.mu.Lock()
		s.base = &baseline{hash: v.hash, ids: ids}
		s.mu.Unlock()
	}
	return nil
}

// eventsPlan says what of the events file to send.
type eventsPlan struct {
	need bool
	// resume is the offset of the first row to send, linesBefore the
	// number of lines before it.
	resume      int64
	linesBefore int
	appended    bool // resume is the end of the committed version
}

// planEvents compares the events file v with what the host has committed
// of it (c). The same version: nothing, or the rest after a partial
// commit. A version that begins with the whole committed version (rows
// appended, or a rewrite that kept the old rows first): the rows after it.
// Anything else: the whole file (events sent again count once: the daemon
// deduplicates them by id).
func planEvents(c evCursor, v *fileVersion) eventsPlan {
	switch {
	case v == nil:
		return eventsPlan{}
	case c.hash == v.hash && !c.partial:
		return eventsPlan{}
	case c.hash == v.hash:
		return eventsPlan{need: true, resume: c.offset, linesBefore: v.markLines}
	case c.hash != "" && !c.partial && c.size > 0 && v.markHash == c.hash && v.markNewline:
		return eventsPlan{need: true, resume: c.size, linesBefore: v.markLines, appended: true}
	}
	return eventsPlan{need: true}
}

// syncEvents streams the events file v as plan says. Its final batch is
// the CaughtUp one.
func (p *puller) syncEvents(ctx context.Context, v *fileVersion, plan eventsPlan) error {
	es, s := p.st.ev, p.s
	str := &eventStreamer{
		sc:          es,
		delimiter:   p.st.set.delimiter,
		batch:       p.st.set.batch,
		hash:        v.hash,
		size:        v.size,
		resume:      plan.resume,
		linesBefore: plan.linesBefore,
		base:        p.cur,
		fb:          p.fb,
		emit:        p.emit,
		beforeFinal: v.unchanged,
	}
	start := time.Now()
	if err := str.run(ctx, v.f); err != nil {
		return err
	}
	s.log.Info("events file loaded", "path", es.set.path, "events", str.stats.events, "problems", str.stats.problems,
		"resumed_at", plan.resume, "appended", plan.appended, "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// fileVersion is an open file and the hash of its content.
type fileVersion struct {
	f      *os.File
	before fs.FileInfo
	hash   string
	size   int64 // bytes hashed
	// At the mark asked for, if the file reaches it: the hash of the bytes
	// before it, how many lines they hold, and whether the last is a
	// newline.
	markHash    string
	markLines   int
	markNewline bool
}

// unchanged returns a changedError if the file's size or modification
// time is not what it was when it was hashed.
func (v *fileVersion) unchanged() error {
	after, err := v.f.Stat()
	if err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	if after.Size() != v.before.Size() || !after.ModTime().Equal(v.before.ModTime()) {
		return &changedError{path: v.f.Name()}
	}
	return nil
}

// open opens and hashes the file at path (the config key field), with
// fingerprint before its content. A missing file is an error on the first
// sync; later it is logged, and open returns nil, nil.
func (p *puller) open(ctx context.Context, path, field string, fingerprint []byte, mark int64, first bool) (*fileVersion, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if !first {
				p.s.log.Warn("file is gone; waiting for it to come back", "path", path)
				return nil, nil
			}
			return nil, sdk.Errorf(sdk.NotFound, field, "%s: %v", field, err)
		}
		return nil, fmt.Errorf("csv: %w", err)
	}
	v := &fileVersion{f: f}
	if v.before, err = f.Stat(); err != nil {
		f.Close()
		return nil, fmt.Errorf("csv: %w", err)
	}
	if err := v.hashContent(ctx, fingerprint, mark); err != nil {
		f.Close()
		return nil, err
	}
	return v, nil
}

// hashContent sets v's hash (and mark fields, if mark > 0) from prefix and
// then the file's content.
func (v *fileVersion) hashContent(ctx context.Context, prefix []byte, mark int64) error {
	h := sha256.New()
	h.Write(prefix)
	buf := make([]byte, 256<<10)
	var pos int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := v.f.Read(buf)
		chunk := buf[:n]
		if k := mark - pos; n > 0 && k > 0 && k <= int64(n) {
			v.markLines += bytes.Count(chunk[:k], []byte{'\n'})
			h.Write(chunk[:k])
			v.markHash = hex.EncodeToString(h.Sum(nil))
			v.markNewline = chunk[k-1] == '\n'
			chunk = chunk[k:]
		} else if k > 0 {
			v.markLines += bytes.Count(chunk, []byte{'\n'})
		}
		h.Write(chunk)
		pos += int64(n)
		if errors.Is(err, io.EOF) {
			v.hash, v.size = hex.EncodeToString(h.Sum(nil)), pos
			return nil
		}
		if err != nil {
			return fmt.Errorf("csv: reading %s: %w", v.f.Name(), err)
		}
	}
}

// fingerprint encodes what of the config decides the batches sent for a
// given file.
func fingerprint(set *settings, sc *schema) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "csv1\x00id=%q\x00delim=%q\x00consent=%q,%q\x00contact=%q,%q,%q\x00",
		sc.idColumn, set.delimiter, sc.consent, sc.consentTime, sc.contact.Email, sc.contact.Phone, sc.contact.Timezone)
	for _, c := range sc.cols {
		fmt.Fprintf(&b, "col=%q,%q,%d,%q,%q\x00", c.header, c.trait, c.typ, c.sep, c.format)
	}
	b.WriteString("\n")
	return []byte(b.String())
}
