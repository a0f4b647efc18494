package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/webhook/webhooksig"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// TestBinaryConformance runs the channel suite against the built plugin,
// launched as the daemon launches it, posting to an httptest server that
// checks every signature with webhooksig.Verify.
func TestBinaryConformance(t *testing.T) {
	const secret = "test-secret-0123456789"
	var mu sync.Mutex
	keys := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhooksig.Verify([]byte(secret), r.Header.Get(webhooksig.Header), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p struct {
			Key string `json:"key"`
		}
		if err := json.Unmarshal(body, &p); err != nil || p.Key != r.Header.Get("Idempotency-Key") {
			t.Errorf("body key %q vs Idempotency-Key %q (%v)", p.Key, r.Header.Get("Idempotency-Key"), err)
		}
		mu.Lock()
		keys[p.Key]++
		mu.Unlock()
		w.Write([]byte(`{"id":"hook-` + p.Key + `"}`))
	}))
	defer srv.Close()
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/webhook")
	sdktest.RunChannelBinary(t, bin, sdktest.ChannelCase{
		Config: []byte("url: " + srv.URL + "/hook\nsecret: " + secret + "\nparallel: 2\n"),
		BadConfigs: [][]byte{
			[]byte("secret: " + secret + "\n"),
			[]byte("url: https://example.com/x\nsecret: short\n"),
			[]byte("url: https://example.com/x\nsecret: " + secret + "\nheaders: {X-Cohort-Signature: forged}\n"),
		},
	})
	mu.Lock()
	defer mu.Unlock()
	for _, k := range []string{"conformance-2", "conformance-3", "concurrent-0-1", "concurrent-3-1"} {
		if keys[k] != 1 {
			t.Errorf("%s arrived %d times, want once", k, keys[k])
		}
	}
}

// TestBinaryOutcomes checks that outcomes and retry hints cross the process
// boundary intact.
func TestBinaryOutcomes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Idempotency-Key") {
		case "gone":
			w.WriteHeader(http.StatusGone)
		case "later":
			w.Header().Set("Retry-After", "42")
			w.WriteHeader(http.StatusTooManyRequests)
		case "lost":
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		default:
			w.Write([]byte(`{"id":"evt-1"}`))
		}
	}))
	defer srv.Close()
	ch := sdktest.LaunchChannel(t, sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/webhook"))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := ch.Configure(ctx, sdk.ConfigureRequest{Config: []byte("url: " + srv.URL + "\nsecret: test-secret-0123456789\n")}); err != nil {
		t.Fatal(err)
	}
	results, err := ch.Send(ctx, []sdk.Message{{Key: "ok"}, {Key: "gone"}, {Key: "later"}, {Key: "lost"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]sdk.Result{
		"ok":    {Key: "ok", Status: sdk.Accepted, ProviderID: "evt-1", Code: "200"},
		"gone":  {Key: "gone", Status: sdk.Suppress, Code: "410"},
		"later": {Key: "later", Status: sdk.Retryable, RetryAfter: 42 * time.Second, Code: "429"},
		"lost":  {Key: "lost", Status: sdk.OutcomeUnknown},
	}
	for _, r := range results {
		w := want[r.Key]
		r.Reason = ""
		if r != w {
			t.Errorf("%s: %+v, want %+v", r.Key, r, w)
		}
	}
}
