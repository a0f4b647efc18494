package sdktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// SourceCase configures the source conformance suite.
type SourceCase struct {
	// Config is a valid config (YAML) that the suite uses for its checks.
	// Its data should be finite or quiet: the suite pulls until a batch is
	// caught up (a source with nothing to send still sends one), then pulls
	// again from that batch's cursor and expects no customer or event twice.
	Config []byte
	// BadConfigs are configs Configure must reject.
	BadConfigs [][]byte
	// Webhook, if set, is a request the plugin must answer with a status.
	Webhook *sdk.WebhookRequest
}

// RunSource runs the source suite against src in this process, through the
// SDK's gRPC shims over a real connection (plugin.TestPluginGRPCConn).
//
// A src that implements sdk.FlatSource is also pulled in this process with
// PullFlat, and its flat batches checked: a name table that only grows, no
// trait named twice in a customer, trait ranges and name indexes within
// the batch.
func RunSource(t *testing.T, src sdk.Source, c SourceCase) {
	t.Helper()
	runSource(t, ConnectSource(t, src), c)
	if fs, ok := src.(sdk.FlatSource); ok {
		t.Run("pull flat", func(t *testing.T) { checkFlatPull(t, fs) })
	}
}

// checkFlatPull pulls fs, configured with SourceCase.Config by the checks
// before, in flat form until a batch is caught up, checking each batch's
// form.
func checkFlatPull(t *testing.T, fs sdk.FlatSource) {
	ctx, cancel := context.WithTimeout(t.Context(), pullTimeout)
	defer cancel()
	var names []string
	n := 0
	errCaughtUp := errors.New("caught up")
	err := fs.PullFlat(ctx, "", func(b *sdk.FlatBatch) error {
		n++
		what := fmt.Sprintf("flat batch %d", n)
		if len(b.Names) < len(names) {
			t.Errorf("%s: Names shrank from %d to %d names: a stream's table only grows", what, len(names), len(b.Names))
		} else {
			for i, name := range names {
				if b.Names[i] != name {
					t.Errorf("%s: Names[%d] changed from %q to %q: an index must mean one name for the whole stream", what, i, name, b.Names[i])
				}
			}
		}
		names = append(names[:0], b.Names...)
		for i, cu := range b.Customers {
			if cu.Start < 0 || cu.Start > cu.End || cu.End > len(b.Traits) {
				t.Errorf("%s: customer %q: trait range [%d:%d] outside the batch's %d traits", what, cu.ID, cu.Start, cu.End, len(b.Traits))
				continue
			}
			seen := map[int]bool{}
			for _, tr := range b.CustomerTraits(i) {
				if tr.Name < 0 || tr.Name >= len(b.Names) {
					t.Errorf("%s: customer %q: name index %d outside Names (%d names)", what, cu.ID, tr.Name, len(b.Names))
					continue
				}
				if seen[tr.Name] {
					t.Errorf("%s: customer %q: trait %q given twice", what, cu.ID, b.Names[tr.Name])
				}
				seen[tr.Name] = true
			}
		}
		if b.CaughtUp {
			return errCaughtUp
		}
		return nil
	})
	if err != nil && !errors.Is(err, errCaughtUp) {
		t.Errorf("PullFlat: %v", err)
	}
	if err == nil {
		t.Error("PullFlat ended without a caught-up batch")
	}
}

// RunSourceBinary runs the source suite against the plugin binary at path,
// launched as the daemon launches it (see LaunchSource).
func RunSourceBinary(t *testing.T, path string, c SourceCase) {
	t.Helper()
	runSource(t, LaunchSource(t, path), c)
}

func runSource(t *testing.T, src sdk.Source, c SourceCase) {
	t.Run("configure rejects bad configs", func(t *testing.T) {
		checkBadConfigs(t, c.BadConfigs, func(ctx context.Context, req sdk.ConfigureRequest) error {
			_, err := src.Configure(ctx, req)
			return err
		})
	})

	var schema *schema
	var info sdk.SourceInfo
	if !t.Run("configure", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		defer cancel()
		var err error
		info, err = src.Configure(ctx, configureRequest(c.Config))
		if err != nil {
			t.Fatalf("Configure with SourceCase.Config: %v", err)
		}
		checkNameVersion(t, info.Name, info.Version)
		schema = checkSourceInfo(t, info)
	}) {
		t.Fatal("source not configured: skipping the other checks")
	}

	var first pulled
	pullOK := t.Run("pull", func(t *testing.T) {
		first = pullUntilCaughtUp(t, src, "", schema)
	})

	t.Run("pull resumes from cursor", func(t *testing.T) {
		if !pullOK {
			t.Skip("first pull failed")
		}
		again := pullUntilCaughtUp(t, src, first.cursor, schema)
		for id := range again.customers {
			if first.customers[id] {
				t.Errorf("customer %q sent again after resuming from cursor %q", id, first.cursor)
			}
		}
		for id := range again.events {
			if first.events[id] {
				t.Errorf("event %q sent again after resuming from cursor %q", id, first.cursor)
			}
		}
	})

	t.Run("pull honours cancellation", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// Cancel as soon as the first batch arrives: the plugin must stop.
		checkPrompt(t, "Pull cancelled at its first batch", func() error {
			return src.Pull(ctx, "", func(*sdk.Batch) error {
				cancel()
				return nil
			})
		}, false)
	})

	t.Run("pull honours deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		checkPrompt(t, "Pull with a 1ms deadline", func() error {
			return src.Pull(ctx, "", func(*sdk.Batch) error { return nil })
		}, false)
	})

	t.Run("webhook", func(t *testing.T) {
		wh, ok := src.(sdk.SourceWebhooker)
		if !ok {
			t.Fatalf("%T does not implement sdk.SourceWebhooker", src)
		}
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		defer cancel()
		if c.Webhook == nil {
			if info.Webhooks {
				t.Skip("plugin has webhooks but SourceCase.Webhook is not set")
			}
			_, err := wh.Webhook(ctx, &sdk.WebhookRequest{Method: "POST", Path: "/"})
			if !errors.Is(err, sdk.ErrNoWebhooks) {
				t.Errorf("Webhook on a source without webhooks = %v, want sdk.ErrNoWebhooks", err)
			}
			return
		}
		if !info.Webhooks {
			t.Error("SourceCase.Webhook is set but SourceInfo.Webhooks is false: implement sdk.SourceWebhooker")
		}
		resp, err := wh.Webhook(ctx, c.Webhook)
		if err != nil {
			t.Fatalf("Webhook: %v", err)
		}
		checkStatus(t, resp.Response.Status)
		if resp.Batch != nil {
			checkBatch(t, "webhook batch", resp.Batch, schema, true)
		}
	})
}

// schema is what a source declared in Configure.
type schema struct {
	traits map[string]sdk.TraitType
	events map[string]bool
}

func checkSourceInfo(t *testing.T, info sdk.SourceInfo) *schema {
	t.Helper()
	s := &schema{traits: map[string]sdk.TraitType{}, events: map[string]bool{}}
	for _, tr := range info.Traits {
		if !identifier.MatchString(tr.Name) {
			t.Errorf("trait %q: name is not an identifier ([A-Za-z_][A-Za-z0-9_]*)", tr.Name)
		}
		if _, dup := s.traits[tr.Name]; dup {
			t.Errorf("trait %q declared twice", tr.Name)
		}
		if tr.Type < sdk.TypeString || tr.Type > sdk.TypeStringList {
			t.Errorf("trait %q: type %d is not one of string, number, bool, time, list", tr.Name, int(tr.Type))
		}
		s.traits[tr.Name] = tr.Type
	}
	for _, name := range info.EventNames {
		if name == "" {
			t.Error("empty event name declared")
		}
		if s.events[name] {
			t.Errorf("event %q declared twice", name)
		}
		s.events[name] = true
	}
	for field, trait := range map[string]string{
		"email":    info.Contact.Email,
		"phone":    info.Contact.Phone,
		"timezone": info.Contact.Timezone,
	} {
		if trait == "" {
			continue
		}
		typ, ok := s.traits[trait]
		if !ok {
			t.Errorf("contact %s names trait %q, which is not declared", field, trait)
		} else if typ != sdk.TypeString {
			t.Errorf("contact %s names trait %q of type %v, want string", field, trait, typ)
		}
	}
	return s
}

// pulled is what one pull until caught up saw.
type pulled struct {
	cursor    string
	customers map[string]bool
	events    map[string]bool
}

// pullUntilCaughtUp pulls from cursor until a batch is caught up, lets a
// finite source end its stream, cancels a live one, and checks that the pull
// ends cleanly and promptly.
func pullUntilCaughtUp(t *testing.T, src sdk.Source, cursor string, s *schema) pulled {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := pulled{customers: map[string]bool{}, events: map[string]bool{}}
	caughtUp := make(chan struct{})
	done := make(chan error, 1)
	// A Pull that ignores its context may outlive the test: it must not
	// report to t then.
	var mu sync.Mutex
	stopped := false
	defer func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}()
	go func() {
		n := 0
		live := false // after the caught-up batch: p belongs to the test goroutine.
		done <- src.Pull(ctx, cursor, func(b *sdk.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return errors.New("test ended")
			}
			n++
			checkBatch(t, fmt.Sprintf("batch %d", n), b, s, false)
			if live {
				return nil
			}
			for _, c := range b.Customers {
				p.customers[c.ID] = true
			}
			for _, e := range b.Events {
				p.events[e.ID] = true
			}
			if b.CaughtUp {
				p.cursor = b.Cursor
				live = true
				close(caughtUp)
			}
			return nil
		})
	}()
	select {
	case <-caughtUp:
	case err := <-done:
		t.Fatalf("Pull from %q ended before a caught-up batch: %v", cursor, err)
	case <-time.After(pullTimeout):
		cancel()
		t.Fatalf("Pull from %q sent no caught-up batch within %v", cursor, pullTimeout)
	}
	select {
	case err := <-done:
		// A finite source ends the stream after the caught-up batch.
		if err != nil {
			t.Errorf("Pull from %q, after its caught-up batch: %v", cursor, err)
		}
		return p
	case <-time.After(time.Second):
		// A live source keeps the stream open.
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Pull from %q, cancelled after caught up: %v", cursor, err)
		}
	case <-time.After(promptly):
		t.Fatalf("Pull from %q did not return within %v of its context being cancelled", cursor, promptly)
	}
	return p
}

// checkBatch checks a batch against the declared schema. Webhook batches
// carry no cursor.
func checkBatch(t *testing.T, what string, b *sdk.Batch, s *schema, webhook bool) {
	t.Helper()
	hasData := len(b.Customers)+len(b.Deletes)+len(b.Events)+len(b.Consents) > 0
	if !webhook && hasData && b.Cursor == "" {
		t.Errorf("%s carries data but no cursor: a restart would replay everything", what)
	}
	ids := make(map[string]bool, len(b.Customers))
	for _, c := range b.Customers {
		if c.ID == "" {
			t.Errorf("%s: customer without id", what)
		}
		if ids[c.ID] {
			t.Errorf("%s: customer %q twice", what, c.ID)
		}
		ids[c.ID] = true
		for name, v := range c.Traits {
			typ, ok := s.traits[name]
			switch {
			case !ok:
				t.Errorf("%s: customer %q: trait %q is not in the schema", what, c.ID, name)
			case !v.Null() && v.Type != typ:
				t.Errorf("%s: customer %q: trait %q is a %v, declared %v", what, c.ID, name, v.Type, typ)
			}
		}
	}
	for _, id := range b.Deletes {
		if id == "" {
			t.Errorf("%s: delete without customer id", what)
		}
	}
	for _, e := range b.Events {
		switch {
		case e.ID == "":
			t.Errorf("%s: event %q without id: replays would count it twice", what, e.Name)
		case e.CustomerID == "":
			t.Errorf("%s: event %q without customer id", what, e.ID)
		case !s.events[e.Name]:
			t.Errorf("%s: event %q: name %q is not in SourceInfo.EventNames", what, e.ID, e.Name)
		case e.Time.IsZero():
			t.Errorf("%s: event %q without a time", what, e.ID)
		}
	}
	for _, c := range b.Consents {
		switch {
		case c.CustomerID == "":
			t.Errorf("%s: consent change without customer id", what)
		case c.Kind != "email" && c.Kind != "sms" && c.Kind != "webhook" && c.Kind != "all":
			t.Errorf("%s: consent of %q: kind %q is not email, sms, webhook or all", what, c.CustomerID, c.Kind)
		case c.Status != sdk.OptIn && c.Status != sdk.OptOut:
			t.Errorf("%s: consent of %q: status %d is neither opt-in nor opt-out", what, c.CustomerID, int(c.Status))
		}
	}
}
