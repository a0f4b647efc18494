package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// BenchmarkPluginProcess sends messages shaped like the daemon's (a
// rendered ~760-byte text, RFC 8058 headers, campaign metadata) through
// the built plugin, launched as the daemon launches it, in Sends of 100
// from 4 goroutines over 4 connections, and reports the CPU the plugin
// process used per message.
func BenchmarkPluginProcess(b *testing.B) {
	const conns, batch, n = 4, 100, 10000
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sink.Close() })
	ch := sdktest.LaunchChannel(b, sdktest.BuildPlugin(b, "github.com/cohortd/cohort/plugins/smtp"))
	cfg := fmt.Sprintf("host: 127.0.0.1\nport: %d\ntls: none\nhelo: bench.example.com\nconnections: %d\ntimeout: 30s\nmax_per_connection: 1000000\n",
		sink.Port(), conns)
	if _, err := ch.Configure(b.Context(), sdk.ConfigureRequest{Instance: "mail", Config: []byte(cfg)}); err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("This is the body of a benchmark message, about as long as a short campaign.\n", 4)
	msgs := make([]sdk.Message, n)
	for i := range msgs {
		k := strconv.Itoa(i)
		u := "https://cohort.example.com/unsubscribe?t=" + strings.Repeat("x", 120) + k
		msgs[i] = sdk.Message{
			Key: "digest/enter/" + k + "/mail", CustomerID: "c" + k, To: "customer-" + k + "@example.com",
			From: "Cohort News <news@example.com>", Subject: "Your weekly digest, Ada" + k,
			Text: "Hello Ada" + k + ",\n\n" + body + "\n1 Main Street, Springfield\nUnsubscribe: " + u + "\n",
			Headers: []sdk.Header{
				{Name: "List-Unsubscribe", Values: []string{"<" + u + ">"}},
				{Name: "List-Unsubscribe-Post", Values: []string{"List-Unsubscribe=One-Click"}},
			},
			Metadata: map[string]string{"campaign": "digest", "variant": "a"},
		}
	}
	var cpu time.Duration
	for b.Loop() {
		sink.Reset()
		c0 := sdktest.ChildCPU()
		sdktest.SendAll(b, ch, msgs, batch, conns)
		cpu += sdktest.ChildCPU() - c0
		if sink.Accepted() != n {
			b.Fatalf("sink accepted %d, want %d", sink.Accepted(), n)
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "plugin-µs/msg")

	// The baseline's client runs in a child process too, so its CPU is
	// measured alone.
	bare, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bare.Close() })
	cmd := exec.CommandContext(b.Context(), os.Args[0]) // TestMain runs the client
	cmd.Env = append(os.Environ(), "COHORT_BARE_SEND_ADDR="+bare.Addr(), "COHORT_BARE_SEND_N="+strconv.Itoa(n))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("bare send: %v\n%s", err, out)
	}
	bareCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	b.ReportMetric(float64(bareCPU.Microseconds())/float64(n), "bare-µs/msg")
}

// TestMain runs smtpsink.BareSend over 4 connections, the baseline's
// client, when BenchmarkPluginProcess starts this binary as its child
// (COHORT_BARE_SEND_ADDR set), and the tests otherwise.
func TestMain(m *testing.M) {
	if addr := os.Getenv("COHORT_BARE_SEND_ADDR"); addr != "" {
		n, _ := strconv.Atoi(os.Getenv("COHORT_BARE_SEND_N"))
		if _, err := smtpsink.BareSend(context.Background(), addr, n, 4); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
