package tracksource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

// eventIDs posts body to path and returns the ids of the events it made.
func eventIDs(t *testing.T, s *Source, path, body string) []string {
	t.Helper()
	resp := call(t, s, post(path, body))
	if resp.Response.Status != 200 {
		t.Fatalf("status %d: %s", resp.Response.Status, resp.Response.Body)
	}
	if resp.Batch == nil {
		return nil
	}
	var ids []string
	for _, e := range resp.Batch.Events {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestDedupIDs(t *testing.T) {
	s, logs := newTestSource(t, baseConfig)

	// The messageId is the event id, so the daemon's (source, id) dedup
	// drops a retried message.
	if got := eventIDs(t, s, "/v1/track", `{"messageId":"abc-123","userId":"u1","event":"Signed Up"}`); !cmp.Equal(got, []string{"abc-123"}) {
		t.Errorf("event ids = %v, want the messageId", got)
	}

	// Without a messageId: a hash of the content, the same for a retry that
	// differs only in what clients set per attempt.
	const msg = `{"userId":"u1","event":"Signed Up","timestamp":"2025-06-01T10:00:00Z","properties":{"a":1,"b":[1,2]}`
	first := eventIDs(t, s, "/v1/track", msg+`,"sentAt":"2025-06-01T10:00:01Z"}`)
	if len(first) != 1 || !regexp.MustCompile(`^sha256:[0-9a-f]{32}$`).MatchString(first[0]) {
		t.Fatalf("event ids = %v, want one sha256:<32 hex> id", first)
	}
	for name, body := range map[string]string{
		"retried with a new sentAt":                  msg + `,"sentAt":"2025-06-01T10:05:00Z"}`,
		"retried with the write key in the body":     msg + `,"writeKey":"` + testKey + `"}`,
		"retried with _metadata":                     msg + `,"_metadata":{"retryCount":2}}`,
		"keys in another order":                      `{"properties":{"b":[1,2],"a":1},"event":"Signed Up","userId":"u1","timestamp":"2025-06-01T10:00:00Z"}`,
		"in a batch, with the type in the message":   "",
		"in a batch with another batch-level sentAt": "",
	} {
		var got []string
		switch name {
		case "in a batch, with the type in the message":
			got = eventIDs(t, s, "/v1/batch", batchOf("", `{"type":"track",`+msg[1:]+`}`))
		case "in a batch with another batch-level sentAt":
			got = eventIDs(t, s, "/v1/batch", batchOf(`"sentAt":"2025-06-01T10:09:00Z"`, `{"type":"track",`+msg[1:]+`}`))
		default:
			got = eventIDs(t, s, "/v1/track", body)
		}
		if !cmp.Equal(got, first) {
			t.Errorf("%s: event ids = %v, want %v", name, got, first)
		}
	}
	for name, body := range map[string]string{
		"another timestamp": `{"userId":"u1","event":"Signed Up","timestamp":"2025-06-01T10:00:01Z","properties":{"a":1,"b":[1,2]}}`,
		"another property":  `{"userId":"u1","event":"Signed Up","timestamp":"2025-06-01T10:00:00Z","properties":{"a":2,"b":[1,2]}}`,
		"another customer":  `{"userId":"u2","event":"Signed Up","timestamp":"2025-06-01T10:00:00Z","properties":{"a":1,"b":[1,2]}}`,
	} {
		got := eventIDs(t, s, "/v1/track", body)
		if len(got) != 1 || got[0] == first[0] {
			t.Errorf("%s: event ids = %v, want one id other than %v", name, got, first)
		}
	}
	// The same content as a page is another message.
	if got := eventIDs(t, s, "/v1/page", msg+`}`); len(got) != 1 || got[0] == first[0] {
		t.Errorf("page with a track's content: ids = %v, want one id other than %v", got, first)
	}
	if !strings.Contains(logs.String(), "message without messageId") || !strings.Contains(logs.String(), "level=DEBUG") {
		t.Errorf("no debug log for a message without messageId:\n%s", logs)
	}

	// Consent from an identify without messageId names the hashed id.
	resp := call(t, s, post("/v1/identify", `{"userId":"u1","traits":{"email_opt_in":true}}`))
	if resp.Batch == nil || len(resp.Batch.Consents) != 1 || !regexp.MustCompile(`^track identify sha256:[0-9a-f]{32}$`).MatchString(resp.Batch.Consents[0].Basis) {
		t.Errorf("consent of an identify without messageId: %+v", resp.Batch)
	}
}

func TestPull(t *testing.T) {
	s, _ := newTestSource(t, baseConfig)
	ctx, cancel := context.WithCancel(t.Context())
	batches := make(chan *sdk.Batch, 4)
	done := make(chan error, 1)
	go func() {
		done <- s.Pull(ctx, "ignored-cursor", func(b *sdk.Batch) error {
			batches <- b
			return nil
		})
	}()
	select {
	case b := <-batches:
		if diff := cmp.Diff(&sdk.Batch{CaughtUp: true}, b); diff != "" {
			t.Errorf("first batch (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no caught-up batch")
	}
	select {
	case err := <-done:
		t.Fatalf("Pull returned before its context was done: %v", err)
	case b := <-batches:
		t.Fatalf("a second batch: %+v", b)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Pull after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pull did not return after cancel")
	}
}

func TestPullReturnsSendError(t *testing.T) {
	s, _ := newTestSource(t, baseConfig)
	boom := errors.New("boom")
	if err := s.Pull(t.Context(), "", func(*sdk.Batch) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Pull = %v, want the send error", err)
	}
}

func TestPullBeforeConfigure(t *testing.T) {
	err := New().Pull(t.Context(), "", func(*sdk.Batch) error { return nil })
	var e *sdk.Error
	if !errors.As(err, &e) || e.Code != sdk.InvalidArgument {
		t.Errorf("Pull before Configure = %v, want an InvalidArgument error", err)
	}
}

func TestCountPowersOfTen(t *testing.T) {
	for n, want := range map[int64]bool{1: true, 2: false, 10: true, 11: false, 100: true, 1000: true, 999: false, 1e18: true, 1e18 + 1: false} {
		if got := isPowerOf10(n); got != want {
			t.Errorf("isPowerOf10(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestCountBoundsNames(t *testing.T) {
	s, _ := newTestSource(t, baseConfig)
	st := s.st.Load()
	quiet := slog.New(slog.DiscardHandler)
	for i := range maxCounted + 5 {
		st.count(quiet, "unknown_trait", fmt.Sprint("t", i))
	}
	st.mu.Lock()
	n, other := len(st.counts), st.counts[countKey{"unknown_trait", "(other)"}]
	st.mu.Unlock()
	if n > maxCounted+1 || other != 5 {
		t.Errorf("%d names counted, %d as (other); want at most %d names and 5 others", n, other, maxCounted+1)
	}
}
