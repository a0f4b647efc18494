package main_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// These tests point the official Go analytics client (segmentio/analytics-go)
// at a stand-in for the daemon's webhook route, which forwards every request
// into the track plugin running as a real process (built and launched as the
// daemon launches it), and check what comes back to be committed.

const e2eKey = "e2e-write-key-0123456789abcdef"

const e2eConfig = `
write_keys: ["e2e-write-key-0123456789abcdef"]
traits:
  email: string
  first_name: {type: string, from: firstName}
  plan: string
  ltv: number
  vip: bool
  signed_up_at: {type: time, from: createdAt}
  tags: list
events: [Order Completed, Signed Up]
`

// launchTrack builds and starts the plugin, configures it as instance "web"
// and keeps a Pull open as the daemon does.
func launchTrack(t *testing.T, config string) sdk.SourceWebhooker {
	t.Helper()
	src := sdktest.LaunchSource(t, sdktest.BuildPlugin(t, pluginPkg))
	info, err := src.Configure(t.Context(), sdk.ConfigureRequest{Instance: "web", Config: []byte(config), WebhookPath: "/webhooks/web"})
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if !info.Webhooks {
		t.Fatal("SourceInfo.Webhooks is false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	caughtUp := make(chan struct{})
	done := make(chan error, 1)
	var once sync.Once
	go func() {
		done <- src.Pull(ctx, "", func(b *sdk.Batch) error {
			if b.CaughtUp {
				once.Do(func() { close(caughtUp) })
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-caughtUp:
	case err := <-done:
		t.Fatalf("Pull ended before catching up: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Pull sent no caught-up batch")
	}
	wh, ok := src.(sdk.SourceWebhooker)
	if !ok {
		t.Fatal("the launched source does not implement sdk.SourceWebhooker")
	}
	return wh
}

// fakeDaemon stands in for the daemon's /webhooks/{instance}/{rest...} route
// (daemon/pluginhost WebhookHandler): it forwards the method, the public
// URL, the path below the instance, the headers and the raw body to the
// plugin's Webhook, commits the batch it returns (here: keeps it), and only
// then answers with the plugin's response.
type fakeDaemon struct {
	t   *testing.T
	wh  sdk.SourceWebhooker
	srv *httptest.Server

	mu        sync.Mutex
	committed []*sdk.Batch
	statuses  []int
	encodings []string
}

func newFakeDaemon(t *testing.T, wh sdk.SourceWebhooker) *fakeDaemon {
	d := &fakeDaemon{t: t, wh: wh}
	mux := http.NewServeMux()
	mux.HandleFunc("/webhooks/{instance}/{rest...}", d.serve)
	d.srv = httptest.NewServer(mux)
	t.Cleanup(d.srv.Close)
	return d
}

// endpoint is what an analytics SDK is configured with.
func (d *fakeDaemon) endpoint() string { return d.srv.URL + "/webhooks/web" }

func (d *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("instance") != "web" {
		http.Error(w, "no such webhook", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return
	}
	req := &sdk.WebhookRequest{
		Method:     r.Method,
		URL:        d.srv.URL + r.URL.RequestURI(),
		Path:       "/" + r.PathValue("rest"),
		Body:       body,
		RemoteAddr: r.RemoteAddr,
	}
	for k, vs := range r.Header {
		req.Headers = append(req.Headers, sdk.Header{Name: k, Values: vs})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	out, err := d.wh.Webhook(ctx, req)
	if err != nil {
		d.t.Logf("webhook failed in the plugin: %v", err)
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	d.mu.Lock()
	if out.Batch != nil {
		d.committed = append(d.committed, out.Batch)
	}
	status := out.Response.Status
	if status == 0 {
		status = http.StatusOK
	}
	d.statuses = append(d.statuses, status)
	d.encodings = append(d.encodings, r.Header.Get("Content-Encoding"))
	d.mu.Unlock()
	for _, h := range out.Response.Headers {
		for _, v := range h.Values {
			w.Header().Add(h.Name, v)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(out.Response.Body)
}

// results returns what was committed, the statuses answered and the
// Content-Encodings received, in order.
func (d *fakeDaemon) results() ([]*sdk.Batch, []int, []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.committed), slices.Clone(d.statuses), slices.Clone(d.encodings)
}

// callbacks records what the analytics client reports for each message.
type callbacks struct {
	mu     sync.Mutex
	ok     []analytics.Message
	failed []error
}

func (c *callbacks) Success(m analytics.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok = append(c.ok, m)
}

func (c *callbacks) Failure(_ analytics.Message, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed = append(c.failed, err)
}

// testWriter sends the analytics client's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newClient(t *testing.T, endpoint, key string, batchSize int, cb *callbacks, transport http.RoundTripper) analytics.Client {
	t.Helper()
	client, err := analytics.NewWithConfig(key, analytics.Config{
		Endpoint:   endpoint,
		BatchSize:  batchSize,
		Interval:   time.Hour, // flush on size and on Close only, so the test decides
		Callback:   cb,
		Logger:     analytics.StdLogger(log.New(testWriter{t}, "analytics-go: ", 0)),
		Transport:  transport,
		RetryAfter: func(int) time.Duration { return time.Millisecond },
	})
	if err != nil {
		t.Fatalf("analytics.NewWithConfig: %v", err)
	}
	return client
}

// committed is everything the plugin returned, as the daemon would have
// stored it: customers' traits merged in commit order, events deduplicated
// by id (the daemon's (source, id) key), consents and problems appended.
type committed struct {
	traits    map[string]map[string]sdk.Value
	events    map[string]sdk.Event
	eventSeen map[string]int
	consents  []sdk.ConsentChange
	problems  []sdk.Problem
}

func merge(batches []*sdk.Batch) committed {
	c := committed{traits: map[string]map[string]sdk.Value{}, events: map[string]sdk.Event{}, eventSeen: map[string]int{}}
	for _, b := range batches {
		for _, cu := range b.Customers {
			if c.traits[cu.ID] == nil {
				c.traits[cu.ID] = map[string]sdk.Value{}
			}
			for k, v := range cu.Traits {
				c.traits[cu.ID][k] = v
			}
		}
		for _, e := range b.Events {
			if _, dup := c.events[e.ID]; !dup {
				c.events[e.ID] = e
			}
			c.eventSeen[e.ID]++
		}
		c.consents = append(c.consents, b.Consents...)
		c.problems = append(c.problems, b.Problems...)
	}
	return c
}

func hasProblem(ps []sdk.Problem, customer, field, text string) bool {
	return slices.ContainsFunc(ps, func(p sdk.Problem) bool {
		return p.CustomerID == customer && p.Field == field && strings.Contains(p.Message, text)
	})
}

func TestAnalyticsGoEndToEnd(t *testing.T) {
	d := newFakeDaemon(t, launchTrack(t, e2eConfig))
	cb := &callbacks{}
	client := newClient(t, d.endpoint(), e2eKey, 4, cb, nil)

	signedUpAt := time.Date(2025, 5, 20, 9, 30, 0, 0, time.UTC)
	orderAt := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	order := analytics.Track{
		UserId: "u-1", Event: "Order Completed", MessageId: "order-1001", Timestamp: orderAt,
		Properties: analytics.NewProperties().SetRevenue(42.5).SetCurrency("EUR").SetOrderId("1001"),
	}
	msgs := []analytics.Message{
		analytics.Identify{UserId: "u-1", Traits: analytics.NewTraits().
			SetEmail("ada@example.com").SetFirstName("Ada").SetCreatedAt(signedUpAt).
			Set("plan", "pro").Set("ltv", 120.5).Set("vip", true).Set("tags", []string{"beta", "eu"}).
			Set("email_opt_in", true).Set("favorite_color", "blue")},
		order,
		analytics.Track{UserId: "u-1", Event: "Signed Up"},
		analytics.Page{UserId: "u-1", Name: "Pricing", Properties: analytics.NewProperties().SetURL("https://example.com/pricing")},
		analytics.Screen{UserId: "u-1", Name: "Home"},
		analytics.Alias{PreviousId: "anon-1", UserId: "u-1"},
		analytics.Group{UserId: "u-1", GroupId: "acme"},
		analytics.Track{AnonymousId: "anon-2", Event: "Signed Up"},
		analytics.Identify{UserId: "u-2", Traits: analytics.NewTraits().Set("ltv", "lots").Set("plan", "free")},
		// The order again, as a client that retried it would send it.
		order,
	}
	start := time.Now()
	for _, m := range msgs {
		if err := client.Enqueue(m); err != nil {
			t.Fatalf("Enqueue %T: %v", m, err)
		}
	}
	if err := client.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	cb.mu.Lock()
	delivered, failed := slices.Clone(cb.ok), slices.Clone(cb.failed)
	cb.mu.Unlock()
	if len(failed) > 0 || len(delivered) != len(msgs) {
		t.Fatalf("analytics-go delivered %d of %d messages; failures: %v", len(delivered), len(msgs), failed)
	}
	batches, statuses, _ := d.results()
	if len(statuses) != 3 {
		t.Errorf("%d requests, want 3 (batches of 4, 4 and 2)", len(statuses))
	}
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("request %d answered %d", i, s)
		}
	}
	// The ids analytics-go gave the messages it generated ids for.
	ids := map[string]string{}
	for _, m := range delivered {
		switch m := m.(type) {
		case analytics.Identify:
			ids["identify "+m.UserId] = m.MessageId
		case analytics.Track:
			ids["track "+m.Event+" "+m.UserId+m.AnonymousId] = m.MessageId
		case analytics.Page:
			ids["page"] = m.MessageId
		case analytics.Screen:
			ids["screen"] = m.MessageId
		}
	}

	got := merge(batches)

	// Traits, converted by the schema.
	wantTraits := map[string]map[string]sdk.Value{
		"u-1": {
			"email": sdk.String("ada@example.com"), "first_name": sdk.String("Ada"), "plan": sdk.String("pro"),
			"ltv": sdk.Number(120.5), "vip": sdk.Bool(true), "signed_up_at": sdk.Time(signedUpAt), "tags": sdk.List("beta", "eu"),
		},
		"u-2": {"plan": sdk.String("free")},
	}
	if diff := cmp.Diff(wantTraits, got.traits, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("customers' traits (-want +got):\n%s", diff)
	}

	// Events: ids are the messageIds; the anonymous track, alias and group
	// made none.
	wantIDs := []string{"order-1001", ids["track Signed Up u-1"], ids["page"], ids["screen"]}
	gotIDs := make([]string, 0, len(got.events))
	for id := range got.events {
		gotIDs = append(gotIDs, id)
	}
	if diff := cmp.Diff(wantIDs, gotIDs, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("event ids (-want +got):\n%s", diff)
	}
	if got.eventSeen["order-1001"] != 2 {
		t.Errorf("order-1001 was returned %d times, want 2 (once per send; the daemon keeps one)", got.eventSeen["order-1001"])
	}
	ord := got.events["order-1001"]
	if ord.CustomerID != "u-1" || ord.Name != "Order Completed" || !ord.HasValue || ord.Value != 42.5 ||
		!cmp.Equal(ord.Properties, map[string]sdk.Value{"revenue": sdk.Number(42.5), "currency": sdk.String("EUR"), "orderId": sdk.String("1001")}) {
		t.Errorf("order event = %+v", ord)
	}
	// Its time is the given timestamp, moved by the (tiny) difference between
	// the client's sentAt and the plugin's clock.
	if skew := ord.Time.Sub(orderAt); skew < -time.Millisecond || skew > 10*time.Second {
		t.Errorf("order time = %v, want %v corrected by at most a few seconds", ord.Time, orderAt)
	}
	su := got.events[ids["track Signed Up u-1"]]
	if su.Name != "Signed Up" || su.CustomerID != "u-1" || su.HasValue || su.Time.Before(start.Add(-time.Second)) || su.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("Signed Up event = %+v, want one at about %v", su, start)
	}
	if pg := got.events[ids["page"]]; pg.Name != "page_viewed" || pg.CustomerID != "u-1" ||
		!cmp.Equal(pg.Properties, map[string]sdk.Value{"url": sdk.String("https://example.com/pricing"), "name": sdk.String("Pricing")}) {
		t.Errorf("page event = %+v", pg)
	}
	if sc := got.events[ids["screen"]]; sc.Name != "screen_viewed" || sc.CustomerID != "u-1" ||
		!cmp.Equal(sc.Properties, map[string]sdk.Value{"name": sdk.String("Home")}) {
		t.Errorf("screen event = %+v", sc)
	}

	// Consent from the identify's email_opt_in.
	if len(got.consents) != 1 {
		t.Fatalf("consents = %+v, want one", got.consents)
	}
	if c := got.consents[0]; c.CustomerID != "u-1" || c.Kind != "email" || c.Status != sdk.OptIn || c.Basis != "track identify "+ids["identify u-1"] {
		t.Errorf("consent = %+v, want u-1 email opt-in with basis %q", c, "track identify "+ids["identify u-1"])
	}

	// Problems: the unknown trait, the wrong-typed trait, the anonymous track.
	for _, p := range []struct{ customer, field, text string }{
		{"u-1", "favorite_color", "not in the traits schema"},
		{"u-2", "ltv", "not a number"},
		{"", "userId", "anonymousId but no userId"},
	} {
		if !hasProblem(got.problems, p.customer, p.field, p.text) {
			t.Errorf("no problem %+v among:\n%+v", p, got.problems)
		}
	}
	if len(got.problems) != 3 {
		t.Errorf("%d problems, want 3: %+v", len(got.problems), got.problems)
	}
}

// gzipTransport compresses request bodies, as several analytics SDKs do.
type gzipTransport struct{ base http.RoundTripper }

func (g gzipTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	_ = r.Body.Close()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(body); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(&buf)
	r.ContentLength = int64(buf.Len())
	r.Header.Del("Content-Length")
	r.Header.Set("Content-Encoding", "gzip")
	return g.base.RoundTrip(r)
}

func TestAnalyticsGoGzip(t *testing.T) {
	d := newFakeDaemon(t, launchTrack(t, e2eConfig))
	cb := &callbacks{}
	client := newClient(t, d.endpoint(), e2eKey, 100, cb, gzipTransport{http.DefaultTransport})
	for i := range 3 {
		if err := client.Enqueue(analytics.Track{UserId: "u-1", Event: "Order Completed", MessageId: fmt.Sprint("gz-", i),
			Properties: analytics.NewProperties().SetTotal(float64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	batches, statuses, encodings := d.results()
	if !slices.Equal(statuses, []int{200}) || !slices.Equal(encodings, []string{"gzip"}) {
		t.Fatalf("statuses %v, encodings %v; want one gzip request answered 200", statuses, encodings)
	}
	got := merge(batches)
	for i := range 3 {
		e, ok := got.events[fmt.Sprint("gz-", i)]
		if !ok || e.Value != float64(i) || !e.HasValue {
			t.Errorf("event gz-%d = %+v (found %v), want value %d from properties.total", i, e, ok, i)
		}
	}
	if len(got.events) != 3 {
		t.Errorf("%d events, want 3", len(got.events))
	}
}

func TestAnalyticsGoWrongKey(t *testing.T) {
	d := newFakeDaemon(t, launchTrack(t, e2eConfig))
	cb := &callbacks{}
	client := newClient(t, d.endpoint(), "not-the-write-key-0123456789", 100, cb, nil)
	if err := client.Enqueue(analytics.Track{UserId: "u-1", Event: "Order Completed"}); err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	batches, statuses, _ := d.results()
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if len(cb.ok) != 0 || len(cb.failed) != 1 || !strings.Contains(cb.failed[0].Error(), "401") {
		t.Errorf("analytics-go: %d delivered, failures %v; want the message failed with 401", len(cb.ok), cb.failed)
	}
	if len(statuses) == 0 {
		t.Fatal("no request reached the daemon")
	}
	for i, s := range statuses {
		if s != http.StatusUnauthorized {
			t.Errorf("request %d answered %d, want 401", i, s)
		}
	}
	if len(batches) != 0 {
		t.Errorf("a request with a wrong key committed %+v", batches)
	}
}

// TestAnalyticsGoVolume sends more messages than one request holds and
// checks that every one arrives once, under Segment's size limits as the
// client applies them.
func TestAnalyticsGoVolume(t *testing.T) {
	d := newFakeDaemon(t, launchTrack(t, e2eConfig))
	cb := &callbacks{}
	client := newClient(t, d.endpoint(), e2eKey, 250, cb, nil)
	const n = 1000
	pad := strings.Repeat("x", 1500)
	for i := range n {
		if err := client.Enqueue(analytics.Track{UserId: fmt.Sprint("u-", i%37), Event: "Signed Up",
			Properties: analytics.NewProperties().Set("note", pad)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	batches, statuses, _ := d.results()
	cb.mu.Lock()
	delivered, failed := len(cb.ok), cb.failed
	cb.mu.Unlock()
	if delivered != n || len(failed) != 0 {
		t.Fatalf("%d of %d delivered; failures %v", delivered, n, failed)
	}
	if len(statuses) < 4 {
		t.Errorf("%d requests; want at least 4 (250 per batch, fewer when 500 KB is reached)", len(statuses))
	}
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("request %d answered %d", i, s)
		}
	}
	if got := merge(batches); len(got.events) != n {
		t.Errorf("%d distinct events, want %d", len(got.events), n)
	}
}
