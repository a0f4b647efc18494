package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/sendgrid/sgbench"
	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// BenchmarkPluginProcess sends sgbench.Message's messages through the
// built plugin, launched as the daemon launches it, in Sends of 100 from 4
// goroutines with parallel 2 (8 requests in flight, as the daemon's
// benchmark has it), and reports the CPU the plugin process used per
// message, beside the CPU of sgbench.DirectSend's client with 8 in flight,
// run in a child process of its own.
func BenchmarkPluginProcess(b *testing.B) {
	const dispatchers, parallel, batch, n = 4, 2, 100, 10000
	s, err := sgserver.Start(sgserver.Config{KeysOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	ch := sdktest.LaunchChannel(b, sdktest.BuildPlugin(b, pluginPkg))
	cfg := fmt.Sprintf("api_key: %s\nbase_url: %s\nparallel: %d\n", s.APIKey(), s.URL, parallel)
	if _, err := ch.Configure(b.Context(), sdk.ConfigureRequest{Instance: "mail", Config: []byte(cfg)}); err != nil {
		b.Fatal(err)
	}
	msgs := make([]sdk.Message, n)
	for i := range msgs {
		msgs[i] = sgbench.Message(i)
	}
	var cpu time.Duration
	for b.Loop() {
		s.Reset()
		c0 := sdktest.ChildCPU()
		sdktest.SendAll(b, ch, msgs, batch, dispatchers)
		cpu += sdktest.ChildCPU() - c0
		if got := len(s.CountByKey()); got != n {
			b.Fatalf("server accepted %d distinct messages, want %d", got, n)
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "plugin-µs/msg")

	bare, err := sgserver.Start(sgserver.Config{KeysOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bare.Close() })
	cmd := exec.CommandContext(b.Context(), os.Args[0]) // TestMain runs the client
	cmd.Env = append(os.Environ(), "COHORT_DIRECT_SEND_URL="+bare.URL, "COHORT_DIRECT_SEND_KEY="+bare.APIKey(),
		"COHORT_DIRECT_SEND_N="+strconv.Itoa(n), "COHORT_DIRECT_SEND_INFLIGHT="+strconv.Itoa(dispatchers*parallel))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("direct send: %v\n%s", err, out)
	}
	bareCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	b.ReportMetric(float64(bareCPU.Microseconds())/float64(n), "bare-µs/msg")
}

// TestMain runs sgbench.DirectSend, the baseline's client, when
// BenchmarkPluginProcess starts this binary as its child
// (COHORT_DIRECT_SEND_URL set), and the tests otherwise.
func TestMain(m *testing.M) {
	if url := os.Getenv("COHORT_DIRECT_SEND_URL"); url != "" {
		n, _ := strconv.Atoi(os.Getenv("COHORT_DIRECT_SEND_N"))
		inflight, _ := strconv.Atoi(os.Getenv("COHORT_DIRECT_SEND_INFLIGHT"))
		if _, err := sgbench.DirectSend(context.Background(), url, os.Getenv("COHORT_DIRECT_SEND_KEY"), n, inflight); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
