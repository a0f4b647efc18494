package sgbench_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/internal/sendgridchannel"
	"github.com/cohortd/cohort/plugins/sendgrid/sgbench"
	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// concurrency is the requests in flight in the benchmarks: the plugin's
// default parallel.
const concurrency = sendgridchannel.DefaultParallel

func startServer(tb testing.TB, cfg sgserver.Config) *sgserver.Server {
	tb.Helper()
	s, err := sgserver.Start(cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestDirectSend(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	_, err := sgbench.DirectSend(t.Context(), s.URL, s.APIKey(), 50, 4)
	require.NoError(t, err)
	counts := s.CountByKey()
	assert.Len(t, counts, 50)
	assert.Equal(t, 1, counts["bench-0"])
	assert.Equal(t, 1, counts["bench-49"])
	assert.Empty(t, s.Duplicates())
	m := s.Accepted()[0]
	assert.Len(t, m.Personalizations, 1)
	assert.NotEmpty(t, m.Body("text/html"))
}

func TestDirectSendFails(t *testing.T) {
	s := startServer(t, sgserver.Config{})
	_, err := sgbench.DirectSend(t.Context(), s.URL, "SG.wrong", 10, 2)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")

	_, err = sgbench.DirectSend(t.Context(), s.URL, s.APIKey(), 10, 0)
	assert.ErrorContains(t, err, "concurrency")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = sgbench.DirectSend(ctx, s.URL, s.APIKey(), 10, 2)
	assert.ErrorIs(t, err, context.Canceled)
}

// benchMessages is the messages sent per benchmark iteration.
const benchMessages = 2000

// BenchmarkSendGridDirect is the baseline for send benchmarks: sendgrid-go
// posting benchMessages single-recipient messages to sgserver, 8 requests
// in flight.
func BenchmarkSendGridDirect(b *testing.B) {
	s := startServer(b, sgserver.Config{KeysOnly: true})
	benchDirect(b, s)
}

// BenchmarkSendGridPlugin: the subject sends the same messages through the
// plugin binary, launched as the daemon launches it, in Sends of MaxBatch
// with parallel 8; the baseline is DirectSend in the same run.
func BenchmarkSendGridPlugin(b *testing.B) {
	b.Run("subject", func(b *testing.B) {
		s := startServer(b, sgserver.Config{KeysOnly: true})
		ch := sdktest.LaunchChannel(b, sdktest.BuildPlugin(b, "github.com/cohortd/cohort/plugins/sendgrid"))
		_, err := ch.Configure(b.Context(), sdk.ConfigureRequest{Instance: "bench",
			Config: fmt.Appendf(nil, "api_key: %s\nbase_url: %s\nparallel: %d\n", s.APIKey(), s.URL, concurrency)})
		require.NoError(b, err)
		msgs := make([]sdk.Message, benchMessages)
		for i := range msgs {
			msgs[i] = sgbench.Message(i)
		}
		for b.Loop() {
			s.Reset()
			for chunk := range slices.Chunk(msgs, sendgridchannel.MaxBatch) {
				results, err := ch.Send(b.Context(), chunk)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range results {
					if r.Status != sdk.Accepted {
						b.Fatalf("%s: %v %s", r.Key, r.Status, r.Reason)
					}
				}
			}
			if n := len(s.CountByKey()); n != benchMessages {
				b.Fatalf("server accepted %d distinct messages, want %d", n, benchMessages)
			}
		}
		b.ReportMetric(float64(b.N*benchMessages)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("baseline", func(b *testing.B) {
		benchDirect(b, startServer(b, sgserver.Config{KeysOnly: true}))
	})
}

func benchDirect(b *testing.B, s *sgserver.Server) {
	for b.Loop() {
		s.Reset()
		if _, err := sgbench.DirectSend(b.Context(), s.URL, s.APIKey(), benchMessages, concurrency); err != nil {
			b.Fatal(err)
		}
		if n := len(s.CountByKey()); n != benchMessages {
			b.Fatalf("server accepted %d distinct messages, want %d", n, benchMessages)
		}
	}
	b.ReportMetric(float64(b.N*benchMessages)/b.Elapsed().Seconds(), "msgs/s")
}
