package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// TestBinaryConformance runs the channel suite against the built plugin,
// launched as the daemon launches it, sending to a real SMTP server, then
// checks what arrived.
func TestBinaryConformance(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/smtp")
	sdktest.RunChannelBinary(t, bin, sdktest.ChannelCase{
		Config: []byte("host: 127.0.0.1\nport: " + strconv.Itoa(sink.Port()) + "\ntls: none\nconnections: 2\ntimeout: 10s\n"),
		BadConfigs: [][]byte{
			[]byte("port: 25\n"),
			[]byte("host: smtp.example.com\ntls: none\n"),
			[]byte("host: smtp.example.com\ntls: ssl\n"),
			[]byte("host: 127.0.0.1\nconections: 2\n"),
		},
	})
	for _, key := range []string{"conformance-1", "conformance-2", "conformance-3", "concurrent-0-1", "concurrent-3-1"} {
		m, ok := sink.Message(key)
		if !ok {
			t.Errorf("message %s did not arrive", key)
			continue
		}
		if m.Header.Get("List-Unsubscribe") == "" || m.Header.Get("Message-Id") == "" {
			t.Errorf("message %s lacks List-Unsubscribe or Message-ID: %v", key, m.Header)
		}
	}
	// The suite sends conformance-1 again in its cancellation checks; every
	// other key must arrive exactly once.
	counts := sink.KeyCounts()
	for _, key := range []string{"conformance-2", "conformance-3", "concurrent-0-1", "concurrent-1-1", "concurrent-2-1", "concurrent-3-1"} {
		if counts[key] != 1 {
			t.Errorf("%s arrived %d times, want once", key, counts[key])
		}
	}
}

// TestBinaryOutcomes checks that every outcome crosses the process boundary
// intact: one batch through the real plugin process, each recipient meeting
// a different fault of the sink.
func TestBinaryOutcomes(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sink.SetFaults(smtpsink.Faults{
		RejectRcpt:   []string{"gone@example.com"},
		TempFailRcpt: []string{"busy@example.com"},
		RejectData:   []string{"spam@example.com"},
		DropRcpt:     []string{"drop@example.com"},
	})
	ch := sdktest.LaunchChannel(t, sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/smtp"))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg := "host: 127.0.0.1\nport: " + strconv.Itoa(sink.Port()) + "\ntls: none\ntimeout: 10s\n"
	if _, err := ch.Configure(ctx, sdk.ConfigureRequest{Instance: "mail", Config: []byte(cfg)}); err != nil {
		t.Fatal(err)
	}
	want := map[string]sdk.ResultStatus{
		"ok@example.com":   sdk.Accepted,
		"gone@example.com": sdk.Suppress,
		"busy@example.com": sdk.Retryable,
		"spam@example.com": sdk.Permanent,
		"drop@example.com": sdk.OutcomeUnknown,
	}
	var msgs []sdk.Message
	for to := range want {
		msgs = append(msgs, sdk.Message{Key: to, To: to, From: "news@example.com", Subject: "hi", Text: "hello"})
	}
	results, err := ch.Send(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(results), len(msgs))
	}
	for _, r := range results {
		if r.Status != want[r.Key] {
			t.Errorf("%s: %v (%s), want %v", r.Key, r.Status, r.Reason, want[r.Key])
		}
	}
	m, ok := sink.Message("ok@example.com")
	if !ok {
		t.Fatal("the accepted message did not arrive")
	}
	for _, r := range results {
		if r.Key == "ok@example.com" && r.ProviderID != m.QueueID {
			t.Errorf("provider id %q, want the sink's queue id %q", r.ProviderID, m.QueueID)
		}
	}
}
