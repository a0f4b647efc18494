package csvsource

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

func watchConfig(path string, extra string) string {
	return "path: " + path + "\nid_column: id\nbatch: 2\n" + extra
}

// planOf returns the plan trait of every customer in bs.
func planOf(bs []*sdk.Batch) map[string]string {
	out := map[string]string{}
	for _, c := range merge(bs).customers {
		out[c.ID] = c.Traits["plan"].Str
	}
	return out
}

// TestWatchRereadsOnChange: with watch on (the default), the stream stays
// open after CaughtUp and sends each new version of the file, whether it
// is renamed into place or rewritten in place.
func TestWatchRereadsOnChange(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(3, "pro"))
	s := newConfigured(t, watchConfig(path, ""))
	lp := startPull(t, s, "")
	first := lp.until(t, "the first CaughtUp", caughtUp)
	if diff := cmp.Diff(map[string]string{"C001": "pro", "C002": "pro", "C003": "pro"}, planOf(first)); diff != "" {
		t.Fatalf("first version (-want +got):\n%s", diff)
	}

	replaceFile(t, path, csvRows(3, "basic"))
	second := lp.until(t, "the renamed version", caughtUp)
	if diff := cmp.Diff(map[string]string{"C001": "basic", "C002": "basic", "C003": "basic"}, planOf(second)); diff != "" {
		t.Errorf("renamed version (-want +got):\n%s", diff)
	}

	if err := os.WriteFile(path, []byte(csvRows(4, "free")), 0o644); err != nil {
		t.Fatal(err)
	}
	third := lp.until(t, "the rewritten version", caughtUp)
	if diff := cmp.Diff(map[string]string{"C001": "free", "C002": "free", "C003": "free", "C004": "free"}, planOf(third)); diff != "" {
		t.Errorf("rewritten version (-want +got):\n%s", diff)
	}
	if merge(third).cursor == merge(second).cursor {
		t.Error("the cursor did not change with the content")
	}
}

// TestWatchIgnoresTouchAndOtherFiles: a touch or a rename of the same
// content sends nothing, nor does a change to another file; the next batch
// is the next real change.
func TestWatchIgnoresTouchAndOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "crm.csv", csvRows(2, "pro"))
	s := newConfigured(t, watchConfig(path, ""))
	synced := make(chan error, 10)
	s.afterWatchSync = func(err error) { synced <- err }
	lp := startPull(t, s, "")
	lp.until(t, "the first CaughtUp", caughtUp)

	waitSync := func(what string) {
		t.Helper()
		select {
		case err := <-synced:
			if err != nil {
				t.Fatalf("re-read after %s: %v", what, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no re-read within 20s of %s", what)
		}
		select {
		case b := <-lp.batches:
			t.Errorf("after %s, sent %s", what, render([]*sdk.Batch{b}))
		default:
		}
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(csvRows(2, "pro")), 0o644); err != nil { // same bytes, new mtime
		t.Fatal(err)
	}
	waitSync("a rewrite with the same content")
	replaceFile(t, path, csvRows(2, "pro"))
	waitSync("a rename of the same content")

	writeFile(t, dir, "other.csv", "id\n1\n")
	replaceFile(t, path, csvRows(2, "enterprise"))
	got := lp.until(t, "the changed version", caughtUp)
	if diff := cmp.Diff(map[string]string{"C001": "enterprise", "C002": "enterprise"}, planOf(got)); diff != "" {
		t.Errorf("changed version (-want +got):\n%s", diff)
	}
	select {
	case err := <-synced:
		if err != nil {
			t.Errorf("re-read: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no re-read")
	}
	if n := len(synced); n != 0 {
		t.Errorf("%d more re-reads: other.csv was not ignored", n)
	}
}

// TestWatchFromCommittedCursor: a live Pull from the cursor of the current
// file sends one CaughtUp batch (with that cursor), then only changes.
func TestWatchFromCommittedCursor(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(2, "pro"))
	s := newConfigured(t, watchConfig(path, "watch: false\n"))
	cur := merge(pullAll(t, s, "")).cursor

	s = newConfigured(t, watchConfig(path, ""))
	lp := startPull(t, s, cur)
	first := lp.until(t, "CaughtUp", caughtUp)
	if diff := cmp.Diff([]*sdk.Batch{{CaughtUp: true, Cursor: cur}}, first); diff != "" {
		t.Errorf("pull from the committed cursor (-want +got):\n%s", diff)
	}
	replaceFile(t, path, "id,Plan,Spend\nC002,basic,2\n")
	got := lp.until(t, "the change", caughtUp)
	if diff := cmp.Diff(map[string]string{"C002": "basic"}, planOf(got)); diff != "" {
		t.Errorf("change (-want +got):\n%s", diff)
	}
}

// TestWatchDeleteMissing: in a live stream each version's missing ids are
// deleted.
func TestWatchDeleteMissing(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(3, "pro"))
	s := newConfigured(t, watchConfig(path, "delete_missing: true\n"))
	lp := startPull(t, s, "")
	lp.until(t, "the first CaughtUp", caughtUp)
	replaceFile(t, path, "id,Plan,Spend\nC002,pro,2\nC004,pro,4\n")
	m := merge(lp.until(t, "the second version", caughtUp))
	if diff := cmp.Diff([]string{"C001", "C003"}, m.deletes); diff != "" {
		t.Errorf("deletes (-want +got):\n%s", diff)
	}
	replaceFile(t, path, "id,Plan,Spend\nC004,pro,4\n")
	m = merge(lp.until(t, "the third version", caughtUp))
	if diff := cmp.Diff([]string{"C002"}, m.deletes); diff != "" {
		t.Errorf("deletes (-want +got):\n%s", diff)
	}
}

// TestWatchSurvivesBadVersions: a version without the id column is
// reported and skipped, a removed file is waited for, and the stream goes
// on with the next good version.
func TestWatchSurvivesBadVersions(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(1, "pro"))
	s := newConfigured(t, watchConfig(path, ""))
	lp := startPull(t, s, "")
	lp.until(t, "the first CaughtUp", caughtUp)

	replaceFile(t, path, "customer,Plan\n1,pro\n")
	got := lp.until(t, "a problem", func(b *sdk.Batch) bool { return len(b.Problems) > 0 })
	want := []sdk.Problem{{Line: 1, Message: `line 1: the id column "id" is not in the header any more; file not loaded`}}
	if diff := cmp.Diff(want, got[len(got)-1].Problems); diff != "" {
		t.Errorf("problem (-want +got):\n%s", diff)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeFile(t, strings.TrimSuffix(path, "crm.csv"), "crm.csv", csvRows(1, "basic"))
	got = lp.until(t, "the fixed version", caughtUp)
	if diff := cmp.Diff(map[string]string{"C001": "basic"}, planOf(got)); diff != "" {
		t.Errorf("fixed version (-want +got):\n%s", diff)
	}
}

// TestWatchStopsOnCancel: a live Pull returns context.Canceled promptly.
func TestWatchStopsOnCancel(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(1, "pro"))
	s := newConfigured(t, watchConfig(path, ""))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- s.Pull(ctx, "", func(b *sdk.Batch) error {
			if b.CaughtUp {
				cancel()
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Pull returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Pull did not return within 10s of cancellation")
	}
}

// TestWatchSendError: an error from send ends a live Pull with that error.
func TestWatchSendError(t *testing.T) {
	path := writeFile(t, t.TempDir(), "crm.csv", csvRows(1, "pro"))
	s := newConfigured(t, watchConfig(path, ""))
	boom := errors.New("host went away")
	first := make(chan struct{})
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- s.Pull(t.Context(), "", func(b *sdk.Batch) error {
			calls++
			if calls == 1 {
				close(first)
				return nil
			}
			return boom
		})
	}()
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		t.Fatal("no first batch within 20s")
	}
	replaceFile(t, path, csvRows(1, "basic"))
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Errorf("Pull returned %v, want the send error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Pull did not return the send error within 20s")
	}
}
