package smtpchannel

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cohortd/cohort/plugins/smtp/smtpsink"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// BenchmarkSMTPPlugin measures the channel in process (message building,
// the pool, one transaction per message over 4 connections) against a
// sink, and puts beside it smtpsink.BareSend, a bare go-smtp client on
// another sink with the same connections, in the same run. Send is called
// with batches of 100 from 4 goroutines, as the daemon's dispatchers would.
func BenchmarkSMTPPlugin(b *testing.B) {
	const conns, batch = 4, 100
	body := strings.Repeat("This is the body of a benchmark message, about as long as a short campaign.\n", 7)
	msgs := make([]sdk.Message, b.N)
	for i := range msgs {
		msgs[i] = sdk.Message{
			Key: fmt.Sprint("bench-", i), To: fmt.Sprintf("customer-%d@example.com", i), From: "Cohort News <news@example.com>",
			Subject: fmt.Sprint("Your weekly digest, number ", i), Text: body,
		}
	}
	sink := startSink(b, smtpsink.Options{})
	c := configure(b, sinkConfig(sink, fmt.Sprintf("connections: %d\n", conns)))

	b.ResetTimer()
	start := time.Now()
	sdktest.SendAll(b, c, msgs, batch, conns)
	plugin := time.Since(start)
	b.StopTimer()

	bare := startSink(b, smtpsink.Options{})
	bareTime, err := smtpsink.BareSend(context.Background(), bare.Addr(), b.N, conns)
	if err != nil {
		b.Fatal(err)
	}
	if sink.Accepted() != b.N || bare.Accepted() != b.N {
		b.Fatalf("sinks accepted %d and %d, want %d each", sink.Accepted(), bare.Accepted(), b.N)
	}
	b.ReportMetric(float64(b.N)/plugin.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/bareTime.Seconds(), "bare-msgs/s")
	b.ReportMetric(bareTime.Seconds()/plugin.Seconds(), "x-bare")
}
