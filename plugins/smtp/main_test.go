package main

import (
	"strconv"
	"testing"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
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
