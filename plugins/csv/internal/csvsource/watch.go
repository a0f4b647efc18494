package csvsource

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher reports changes to a set of files. It watches each file's
// directory, not the file, so a file replaced by a rename (how exports are
// usually written) is still seen.
type watcher struct {
	w       *fsnotify.Watcher
	changed chan struct{} // holds at most one pending change
	done    chan struct{}
	failed  chan error
}

func newWatcher(paths []string, log *slog.Logger) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("csv: watching %s: %w", strings.Join(paths, ", "), err)
	}
	names := map[string]bool{}
	// A symlink's target can change without an event naming the link (a
	// Kubernetes ConfigMap swaps a directory link), so then any event in
	// its directory counts; the content hash tells whether it matters.
	anyName := map[string]bool{}
	var dirs []string
	for _, path := range paths {
		dir := filepath.Dir(path)
		names[path] = true
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			anyName[dir] = true
		}
		if slices.Contains(dirs, dir) {
			continue
		}
		if err := fw.Add(dir); err != nil {
			fw.Close()
			return nil, fmt.Errorf("csv: watching %s: %w", dir, err)
		}
		dirs = append(dirs, dir)
	}
	dir := strings.Join(dirs, ", ")
	w := &watcher{w: fw, changed: make(chan struct{}, 1), done: make(chan struct{}), failed: make(chan error, 1)}
	go func() {
		for {
			select {
			case ev, ok := <-fw.Events:
				if !ok {
					w.failed <- fmt.Errorf("csv: watching %s: the watcher stopped", dir)
					return
				}
				name := filepath.Clean(ev.Name)
				if ev.Op == fsnotify.Chmod || (!names[name] && !anyName[filepath.Dir(name)]) {
					continue
				}
				select {
				case w.changed <- struct{}{}:
				default:
				}
			case err, ok := <-fw.Errors:
				if !ok {
					w.failed <- fmt.Errorf("csv: watching %s: the watcher stopped", dir)
					return
				}
				// An overflow loses events, not the watch: read the file
				// again to be sure.
				log.Warn("file watcher", "dir", dir, "err", err)
				select {
				case w.changed <- struct{}{}:
				default:
				}
			case <-w.done:
				return
			}
		}
	}()
	return w, nil
}

// wait returns when the file changed and then stayed quiet for debounce
// (or changed continuously for 10 times that), or with ctx's error.
func (w *watcher) wait(ctx context.Context, debounce time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-w.failed:
		return err
	case <-w.changed:
	}
	deadline := time.NewTimer(10 * debounce)
	defer deadline.Stop()
	quiet := time.NewTimer(debounce)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-w.failed:
			return err
		case <-w.changed:
			quiet.Reset(debounce)
		case <-quiet.C:
			return nil
		case <-deadline.C:
			return nil
		}
	}
}

// Close stops watching.
func (w *watcher) Close() error {
	close(w.done)
	return w.w.Close()
}
