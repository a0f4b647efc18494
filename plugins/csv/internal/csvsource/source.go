// Package csvsource is the csv source plugin: it reads a CRM export (a CSV
// file with a header row) into customers, and with watch on keeps the
// stream open and re-reads the file when it changes.
//
// Values: an empty cell (or one of only spaces) is a missing trait and is
// left out of the customer's traits — never sent as a null, which would
// remove a value the customer already has. A cell that does not parse as
// its column's type is reported as an sdk.Problem (line, column, trait) and
// only that trait is skipped; a row without an id, with a duplicate id (the
// first row wins), with the wrong number of fields or broken quoting is
// reported and skipped. Good rows always load.
//
// Cursor: the SHA-256 of the file's content, plus the byte offset of the
// last row sent while a version is being streamed, so a restart resumes
// after the last committed batch. See cursor.
package csvsource

import (
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

var _ sdk.Source = (*Source)(nil)

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
	s.mu.Lock()
	s.state = &state{set: set, sc: sc, basis: "csv import " + filepath.Base(set.path), fingerprint: fingerprint(set, sc)}
	s.mu.Unlock()
	return sdk.SourceInfo{
		Name:    "csv",
		Version: Version,
		Traits:  append([]sdk.Trait(nil), sc.traits...),
		Contact: sc.contact,
	}, nil
}

// Pull streams the file from cursor on. With watch off it returns after the
// batch marked CaughtUp; with watch on it then waits for the file to change
// and streams each new version, until ctx is done.
func (s *Source) Pull(ctx context.Context, cursorText string, send func(*sdk.Batch) error) error {
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
		var err error
		if w, err = newWatcher(st.set.path, s.log); err != nil {
			return err
		}
		defer w.Close()
	}
	var sendErr error
	p := &puller{s: s, st: st, cur: cur, send: func(b *sdk.Batch) error {
		if err := send(b); err != nil {
			sendErr = err
			return err
		}
		return nil
	}}
	if err := p.sync(ctx, true); err != nil {
		var he *headerError
		if errors.As(err, &he) {
			return sdk.Errorf(sdk.InvalidConfig, "path", "path: %s: %s; fix the file or the config", st.set.path, he.msg)
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
			s.log.Error("cannot load the changed file; waiting for the next change", "path", st.set.path, "err", err)
			var he *headerError
			if errors.As(err, &he) {
				if err := send(&sdk.Batch{Problems: []sdk.Problem{{Line: 1, Message: "line 1: " + he.msg + "; file not loaded"}}}); err != nil {
					return err
				}
			}
		}
	}
}

// puller is one Pull call's progress.
type puller struct {
	s    *Source
	st   *state
	cur  cursor // what the host has committed (the last cursor sent)
	send func(*sdk.Batch) error
}

// sync brings the host up to date with the file. On the first sync it
// sends a batch marked CaughtUp even when nothing changed.
func (p *puller) sync(ctx context.Context, first bool) error {
	for attempt := 1; ; attempt++ {
		err := p.syncOnce(ctx, first)
		if !errors.Is(err, errChanged) {
			return err
		}
		if attempt == maxRereads {
			return fmt.Errorf("csv: %s kept changing while it was read (%d tries); write it to a temporary file and rename it into place", p.st.set.path, attempt)
		}
		p.s.log.Info("file changed while it was read; reading it again", "path", p.st.set.path)
	}
}

var errChanged = errors.New("file changed while it was read")

func (p *puller) syncOnce(ctx context.Context, first bool) error {
	set, s := p.st.set, p.s
	f, err := os.Open(set.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if !first {
				s.log.Warn("file is gone; waiting for it to come back", "path", set.path)
				return nil
			}
			return sdk.Errorf(sdk.NotFound, "path", "path: %v", err)
		}
		return fmt.Errorf("csv: %w", err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	hash, err := contentHash(ctx, f, p.st.fingerprint)
	if err != nil {
		return err
	}
	upToDate := p.cur.hash == hash && !p.cur.partial
	if upToDate && !first {
		return nil // touched, not changed
	}
	if upToDate && !set.raw.DeleteMissing {
		return p.send(&sdk.Batch{CaughtUp: true})
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	str := &streamer{
		sc:          p.st.sc,
		delimiter:   set.delimiter,
		batch:       set.batch,
		hash:        hash,
		prev:        p.cur.committed(),
		consentTime: before.ModTime().UTC(),
		basis:       p.st.basis,
		sizeHint:    p.st.sc.rows,
		emit: func(b *sdk.Batch) error {
			if err := p.send(b); err != nil {
				return err
			}
			if b.Cursor != "" {
				p.cur, _ = parseCursor(b.Cursor)
			}
			return nil
		},
		beforeFinal: func() error {
			after, err := f.Stat()
			if err != nil {
				return fmt.Errorf("csv: %w", err)
			}
			if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
				return errChanged
			}
			return nil
		},
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
		// this one: read them, send nothing but the CaughtUp batch.
		str.resume = math.MaxInt64
		str.prev = ""
	case p.cur.hash == hash && p.cur.partial:
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
	start := time.Now()
	ids, err := str.run(ctx, f)
	if err != nil {
		return err
	}
	if !upToDate {
		s.log.Info("file loaded", "path", set.path, "customers", str.stats.customers, "problems", str.stats.problems,
			"consents", str.stats.consents, "deletes", str.stats.deletes, "resumed_at", str.resume, "took", time.Since(start).Round(time.Millisecond).String())
	}
	if set.raw.DeleteMissing {
		s.mu.Lock()
		s.base = &baseline{hash: hash, ids: ids}
		s.mu.Unlock()
	}
	return nil
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

// contentHash is the hex SHA-256 of prefix and then r's content.
func contentHash(ctx context.Context, r io.Reader, prefix []byte) (string, error) {
	h := sha256.New()
	h.Write(prefix)
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", fmt.Errorf("csv: reading the file: %w", err)
		}
	}
}
