package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/webhook/webhooksig"
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
