package sdktest_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/internal/synth"
	"github.com/cohortd/cohort/sdk/sdktest"
)

const benchsource = "github.com/cohortd/cohort/sdk/internal/benchsource"

// memChannel is a well-behaved channel that keeps what it sends.
type memChannel struct {
	mu   sync.Mutex
	sent []sdk.Message
}

func (c *memChannel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	if string(req.Config) != "ok: true\n" {
		return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "ok", "ok must be true")
	}
	return sdk.ChannelInfo{Name: "mem", Version: "1.0.0", Kind: "sms", MaxBatch: 2, RateHint: 10}, nil
}

func (c *memChannel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, msgs...)
	results := make([]sdk.Result, len(msgs))
	for i, m := range msgs {
		results[i] = sdk.Result{Key: m.Key, Status: sdk.Accepted, ProviderID: "mem-" + m.Key}
		if strings.HasSuffix(m.To, "3") {
			results[i] = sdk.Result{Key: m.Key, Status: sdk.Suppress, Reason: "number opted out", Code: "21610"}
		}
	}
	return results, nil
}

func (c *memChannel) Webhook(_ context.Context, req *sdk.WebhookRequest) (*sdk.ChannelWebhookResponse, error) {
	if req.Header("X-Token") != "secret" {
		return &sdk.ChannelWebhookResponse{Response: sdk.HTTPResponse{Status: 401}}, nil
	}
	return &sdk.ChannelWebhookResponse{
		Response: sdk.HTTPResponse{Status: 204},
		Events:   []sdk.DeliveryEvent{{Key: "k", Type: sdk.DeliveryDelivered, Time: time.Now()}},
	}, nil
}

func TestRunChannel(t *testing.T) {
	ch := &memChannel{}
	sdktest.RunChannel(t, ch, sdktest.ChannelCase{
		Config:     []byte("ok: true\n"),
		BadConfigs: [][]byte{[]byte("ok: false\n"), nil},
		Webhook:    &sdk.WebhookRequest{Method: "POST", Path: "/status", Headers: []sdk.Header{{Name: "X-Token", Values: []string{"secret"}}}},
	})
	ch.mu.Lock()
	defer ch.mu.Unlock()
	defaults := map[string]bool{}
	for _, m := range ch.sent {
		if strings.HasPrefix(m.Key, "conformance-") {
			defaults[m.Key] = true
			if !strings.HasPrefix(m.To, "+1555555010") {
				t.Errorf("default sms message to %q, want a +1 555-01xx number", m.To)
			}
		}
	}
	if len(defaults) != 3 {
		t.Errorf("suite sent default messages %v, want 3", defaults)
	}
}

// eventSource is a finite source with every kind of record, and webhooks.
type eventSource struct{}

func (eventSource) Configure(context.Context, sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	return sdk.SourceInfo{
		Name:       "events",
		Version:    "2.0.0",
		Traits:     []sdk.Trait{{Name: "email", Type: sdk.TypeString}, {Name: "tags", Type: sdk.TypeStringList}, {Name: "tz", Type: sdk.TypeString}},
		EventNames: []string{"order_completed"},
		Contact:    sdk.ContactFields{Email: "email", Timezone: "tz"},
	}, nil
}

func (eventSource) Pull(ctx context.Context, cursor string, send func(*sdk.Batch) error) error {
	start, _ := strconv.Atoi(cursor)
	const total = 5
	for i := start; i < total; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		id := fmt.Sprintf("c%d", i)
		b := &sdk.Batch{
			Customers: []sdk.Customer{{ID: id, Traits: map[string]sdk.Value{
				"email": sdk.String(id + "@example.com"), "tags": sdk.List("a"), "tz": {},
			}}},
			Events:   []sdk.Event{{ID: "e" + id, CustomerID: id, Name: "order_completed", Time: time.Now(), Value: 10, HasValue: true}},
			Consents: []sdk.ConsentChange{{CustomerID: id, Kind: "email", Status: sdk.OptIn, Time: time.Now(), Basis: "signup form"}},
			Deletes:  []string{fmt.Sprintf("old%d", i)},
			Cursor:   strconv.Itoa(i + 1),
			CaughtUp: i == total-1,
		}
		if err := send(b); err != nil {
			return err
		}
	}
	if start >= total {
		return send(&sdk.Batch{Cursor: cursor, CaughtUp: true})
	}
	return nil
}

func (eventSource) Webhook(_ context.Context, req *sdk.WebhookRequest) (*sdk.SourceWebhookResponse, error) {
	return &sdk.SourceWebhookResponse{
		Response: sdk.HTTPResponse{Status: 200, Body: []byte(`{"success":true}`)},
		Batch:    &sdk.Batch{Events: []sdk.Event{{ID: "w1", CustomerID: "c1", Name: "order_completed", Time: time.Now()}}},
	}, nil
}

func TestRunSource(t *testing.T) {
	sdktest.RunSource(t, eventSource{}, sdktest.SourceCase{
		Webhook: &sdk.WebhookRequest{Method: "POST", Path: "/v1/batch", Body: []byte(`{"batch":[]}`)},
	})
}

func TestRunSourceSynth(t *testing.T) {
	for _, config := range []string{"customers: 2500\nbatch_size: 1000\n", "customers: 0\n", "customers: 10\nlive: true\n"} {
		t.Run(config, func(t *testing.T) {
			sdktest.RunSource(t, &synth.Source{}, sdktest.SourceCase{
				Config:     []byte(config),
				BadConfigs: [][]byte{[]byte("customers: -1\n"), []byte("batch_size: 0\n"), []byte("nope: 1\n")},
			})
		})
	}
}

func TestRunSourceBinary(t *testing.T) {
	sdktest.RunSourceBinary(t, sdktest.BuildPlugin(t, benchsource), sdktest.SourceCase{
		Config:     []byte("customers: 3000\nbatch_size: 700\nlive: true\n"),
		BadConfigs: [][]byte{[]byte("customers: -1\n")},
	})
}

func TestBuildPluginOncePerProcess(t *testing.T) {
	a := sdktest.BuildPlugin(t, benchsource)
	b := sdktest.BuildPlugin(t, benchsource)
	if a != b {
		t.Errorf("BuildPlugin built twice: %s and %s", a, b)
	}
	if st, err := os.Stat(a); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("BuildPlugin's %s is not an executable: %v", a, err)
	}
}

func TestLaunchSourceNegotiatesAndServes(t *testing.T) {
	src := sdktest.LaunchSource(t, sdktest.BuildPlugin(t, benchsource))
	info, err := src.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("customers: 5\n")})
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "synth" || len(info.Traits) != 8 {
		t.Errorf("info = %+v, want synth with 8 traits", info)
	}
	var n int
	if err := src.Pull(t.Context(), "", func(b *sdk.Batch) error { n += len(b.Customers); return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("pulled %d customers, want 5", n)
	}
}

// The suite must fail broken plugins. Each case runs the suite against a
// broken plugin in a child test process and expects it to fail saying why.

const brokenEnv = "SDKTEST_BROKEN_CASE"

func TestSuiteFailsBrokenPlugins(t *testing.T) {
	cases := map[string]string{
		"accepts bad config":    "Configure accepted bad config",
		"bad kind":              `ChannelInfo.Kind = "fax"`,
		"empty name":            "Info.Name is empty",
		"missing result":        `no result for message "conformance-3"`,
		"foreign key":           `result for key "nope", which was not sent`,
		"unknown status":        "has unknown status 0",
		"suppress no reason":    "is suppress without a reason",
		"empty send fails":      "Send(no messages) = ",
		"webhook unimplemented": "ChannelInfo.Webhooks is false",
		"webhook bad status":    "webhook response status 700",
		"bad trait name":        `trait "2fast": name is not an identifier`,
		"duplicate trait":       `trait "email" declared twice`,
		"contact undeclared":    `contact email names trait "mail", which is not declared`,
		"never caught up":       "ended before a caught-up batch",
		"resends":               `customer "c0" sent again after resuming`,
		"undeclared trait":      `trait "age" is not in the schema`,
		"wrong trait type":      `trait "email" is a number, declared string`,
		"undeclared event":      `name "clicked" is not in SourceInfo.EventNames`,
		"no cursor":             "carries data but no cursor",
		"flat trait twice":      `customer "c0": trait "email" given twice`,
		"flat names change":     `[0] changed from "email" to "renamed"`,
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenPluginHelper$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a plugin with %q:\n%s", name, out)
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("the suite failed a plugin with %q without saying %q:\n%s", name, want, out)
			}
		})
	}
}

// TestBrokenPluginHelper runs in the child process of
// TestSuiteFailsBrokenPlugins.
func TestBrokenPluginHelper(t *testing.T) {
	name := os.Getenv(brokenEnv)
	if name == "" {
		t.Skip("helper for TestSuiteFailsBrokenPlugins")
	}
	if ch, c, ok := brokenChannel(name); ok {
		sdktest.RunChannel(t, ch, c)
		return
	}
	if src, ok := brokenSource(name); ok {
		sdktest.RunSource(t, src, sdktest.SourceCase{})
		return
	}
	t.Fatalf("no broken plugin %q", name)
}

// brokenCh is memChannel, without webhooks, with one thing wrong.
type brokenCh struct {
	mem  memChannel
	what string
}

func (c *brokenCh) Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	info, err := c.mem.Configure(ctx, req)
	switch c.what {
	case "accepts bad config":
		err = nil
		info = sdk.ChannelInfo{Name: "mem", Version: "1", Kind: "email"}
	case "bad kind":
		info.Kind = "fax"
	case "empty name":
		info.Name = ""
	}
	return info, err
}

func (c *brokenCh) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if len(msgs) == 0 && c.what == "empty send fails" {
		return nil, fmt.Errorf("nothing to send")
	}
	rs, err := c.mem.Send(ctx, msgs)
	for i := range rs {
		switch c.what {
		case "missing result":
			if rs[i].Key == "conformance-3" {
				rs = rs[:i]
				return rs, err
			}
		case "foreign key":
			rs[i].Key = "nope"
		case "unknown status":
			rs[i].Status = sdk.StatusUnknown
		case "suppress no reason":
			rs[i] = sdk.Result{Key: rs[i].Key, Status: sdk.Suppress}
		}
	}
	return rs, err
}

type brokenChWithHook struct{ *brokenCh }

func (c brokenChWithHook) Webhook(context.Context, *sdk.WebhookRequest) (*sdk.ChannelWebhookResponse, error) {
	return &sdk.ChannelWebhookResponse{Response: sdk.HTTPResponse{Status: 700}}, nil
}

func brokenChannel(name string) (sdk.Channel, sdktest.ChannelCase, bool) {
	c := sdktest.ChannelCase{Config: []byte("ok: true\n"), BadConfigs: [][]byte{[]byte("ok: false\n")}}
	ch := &brokenCh{what: name}
	switch name {
	case "accepts bad config", "bad kind", "empty name", "missing result", "foreign key",
		"unknown status", "suppress no reason", "empty send fails":
		return ch, c, true
	case "webhook unimplemented":
		c.Webhook = &sdk.WebhookRequest{Method: "POST", Path: "/"}
		return ch, c, true
	case "webhook bad status":
		c.Webhook = &sdk.WebhookRequest{Method: "POST", Path: "/"}
		return brokenChWithHook{ch}, c, true
	}
	return nil, c, false
}

// brokenSrc is eventSource with one thing wrong.
type brokenSrc struct {
	eventSource
	what string
}

func (s brokenSrc) Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	info, err := s.eventSource.Configure(ctx, req)
	switch s.what {
	case "bad trait name":
		info.Traits = append(info.Traits, sdk.Trait{Name: "2fast", Type: sdk.TypeBool})
	case "duplicate trait":
		info.Traits = append(info.Traits, sdk.Trait{Name: "email", Type: sdk.TypeString})
	case "contact undeclared":
		info.Contact.Email = "mail"
	}
	return info, err
}

func (s brokenSrc) Pull(ctx context.Context, cursor string, send func(*sdk.Batch) error) error {
	switch s.what {
	case "resends":
		cursor = ""
	case "never caught up":
		return send(&sdk.Batch{Cursor: "1", Customers: []sdk.Customer{{ID: "c0"}}})
	}
	return s.eventSource.Pull(ctx, cursor, func(b *sdk.Batch) error {
		switch s.what {
		case "undeclared trait":
			b.Customers[0].Traits["age"] = sdk.Number(42)
		case "wrong trait type":
			b.Customers[0].Traits["email"] = sdk.Number(42)
		case "undeclared event":
			b.Events[0].Name = "clicked"
		case "no cursor":
			b.Cursor = ""
		}
		return send(b)
	})
}

// brokenFlatSrc is eventSource sending flat batches, with one thing wrong.
type brokenFlatSrc struct{ brokenSrc }

func (s brokenFlatSrc) PullFlat(ctx context.Context, cursor string, send func(*sdk.FlatBatch) error) error {
	fb := &sdk.FlatBatch{}
	email := fb.Name("email")
	n := 0
	return s.eventSource.Pull(ctx, cursor, func(b *sdk.Batch) error {
		n++
		fb.Reset()
		if s.what == "flat names change" && n == 2 {
			fb.Names[0] = "renamed"
		}
		for _, c := range b.Customers {
			fb.AddCustomer(c.ID)
			for _, name := range slices.Sorted(maps.Keys(c.Traits)) {
				fb.AddTrait(fb.Name(name), c.Traits[name])
			}
			if s.what == "flat trait twice" {
				fb.AddTrait(email, sdk.String("again@example.com"))
			}
		}
		fb.Deletes, fb.Events, fb.Consents = b.Deletes, b.Events, b.Consents
		fb.Cursor, fb.CaughtUp = b.Cursor, b.CaughtUp
		return send(fb)
	})
}

func brokenSource(name string) (sdk.Source, bool) {
	switch name {
	case "flat trait twice", "flat names change":
		return brokenFlatSrc{brokenSrc{what: name}}, true
	case "bad trait name", "duplicate trait", "contact undeclared", "never caught up", "resends",
		"undeclared trait", "wrong trait type", "undeclared event", "no cursor":
		return brokenSrc{what: name}, true
	}
	return nil, false
}

// TestSendAll: every message goes out once, in Sends of at most batch.
func TestSendAll(t *testing.T) {
	ch := &batchRecorder{}
	msgs := make([]sdk.Message, 250)
	for i := range msgs {
		msgs[i] = sdk.Message{Key: fmt.Sprintf("k%d", i), To: "+15550100"}
	}
	sdktest.SendAll(t, ch, msgs, 100, 3)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.keys) != len(msgs) {
		t.Errorf("sent %d distinct keys, want %d", len(ch.keys), len(msgs))
	}
	for k, n := range ch.keys {
		if n != 1 {
			t.Errorf("key %s sent %d times", k, n)
		}
	}
	if ch.largest != 100 || ch.calls != 3 {
		t.Errorf("%d Sends, the largest of %d messages; want 3, the largest of 100", ch.calls, ch.largest)
	}
}

// batchRecorder accepts everything and counts what it was sent.
type batchRecorder struct {
	mu             sync.Mutex
	keys           map[string]int
	calls, largest int
}

func (c *batchRecorder) Configure(context.Context, sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	return sdk.ChannelInfo{Name: "rec", Version: "1.0.0", Kind: "sms"}, nil
}

func (c *batchRecorder) Send(_ context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]int{}
	}
	c.calls++
	c.largest = max(c.largest, len(msgs))
	results := make([]sdk.Result, len(msgs))
	for i, m := range msgs {
		c.keys[m.Key]++
		results[i] = sdk.Result{Key: m.Key, Status: sdk.Accepted, ProviderID: "rec-" + m.Key}
	}
	return results, nil
}
