package csvsource

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// newTestSource returns a Source that logs to the test's output and
// debounces file changes briefly.
func newTestSource(t *testing.T) *Source {
	t.Helper()
	s := New(WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))))
	s.debounce = 100 * time.Millisecond
	return s
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceFile writes content to a temporary file beside path and renames it
// into place, as an export job would.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func testdataPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func configure(t *testing.T, s *Source, config string) sdk.SourceInfo {
	t.Helper()
	info, err := s.Configure(t.Context(), sdk.ConfigureRequest{Instance: "crm", Config: []byte(config)})
	if err != nil {
		t.Fatalf("Configure: %v\nconfig:\n%s", err, config)
	}
	return info
}

// pullAll pulls a finite source from cursor and returns every batch.
func pullAll(t *testing.T, s *Source, cursor string) []*sdk.Batch {
	t.Helper()
	var got []*sdk.Batch
	err := s.Pull(t.Context(), cursor, func(b *sdk.Batch) error {
		got = append(got, b)
		return nil
	})
	if err != nil {
		t.Fatalf("Pull(%q): %v", cursor, err)
	}
	if len(got) == 0 || !got[len(got)-1].CaughtUp {
		t.Fatalf("Pull(%q): the last of %d batches is not CaughtUp", cursor, len(got))
	}
	for i, b := range got[:len(got)-1] {
		if b.CaughtUp {
			t.Errorf("Pull(%q): batch %d of %d is CaughtUp before the last", cursor, i+1, len(got))
		}
	}
	return got
}

// merged is what a list of batches sent, in order.
type merged struct {
	customers []sdk.Customer
	events    []sdk.Event
	problems  []sdk.Problem
	consents  []sdk.ConsentChange
	deletes   []string
	cursor    string // the last non-empty cursor
}

func merge(bs []*sdk.Batch) merged {
	var m merged
	for _, b := range bs {
		m.customers = append(m.customers, b.Customers...)
		m.events = append(m.events, b.Events...)
		m.problems = append(m.problems, b.Problems...)
		m.consents = append(m.consents, b.Consents...)
		m.deletes = append(m.deletes, b.Deletes...)
		if b.Cursor != "" {
			m.cursor = b.Cursor
		}
	}
	return m
}

func (m merged) ids() []string {
	ids := make([]string, len(m.customers))
	for i, c := range m.customers {
		ids[i] = c.ID
	}
	return ids
}

// livePull runs a Pull in the background and hands its batches over a
// channel; the Pull is cancelled and awaited when the test ends.
type livePull struct {
	batches chan *sdk.Batch
	done    chan error
}

func startPull(t *testing.T, s *Source, cursor string) *livePull {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lp := &livePull{batches: make(chan *sdk.Batch, 1000), done: make(chan error, 1)}
	go func() {
		lp.done <- s.Pull(ctx, cursor, func(b *sdk.Batch) error {
			select {
			case lp.batches <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-lp.done:
		case <-time.After(10 * time.Second):
			t.Error("Pull did not return within 10s of cancellation")
		}
	})
	return lp
}

// until reads batches until one satisfies ok, failing after a generous
// deadline. It returns every batch read, the last being the one that
// satisfied ok.
func (lp *livePull) until(t *testing.T, what string, ok func(*sdk.Batch) bool) []*sdk.Batch {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var got []*sdk.Batch
	for {
		select {
		case b := <-lp.batches:
			got = append(got, b)
			if ok(b) {
				return got
			}
		case err := <-lp.done:
			t.Fatalf("waiting for %s: Pull returned %v", what, err)
		case <-deadline:
			t.Fatalf("waiting for %s: nothing within 20s (got %d batches)", what, len(got))
		}
	}
}

func caughtUp(b *sdk.Batch) bool { return b.CaughtUp }

func (m merged) eventIDs() []string {
	ids := make([]string, len(m.events))
	for i, e := range m.events {
		ids[i] = e.ID
	}
	return ids
}
