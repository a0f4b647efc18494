package sdk_test

import (
	"fmt"
	"testing"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/internal/synth"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// benchCustomers is how many customers one benchmark iteration pulls.
const benchCustomers = 1_000_000

// BenchmarkPullStream streams synthetic customers (8 traits each, batches of
// 1000) from a source plugin process (the built binary, AutoMTLS on, as the
// daemon launches it) — the subject — beside the same source served in this
// process over plugin.TestPluginGRPCConn — the baseline — in the same run.
// `make bench` prints them side by side with the target (issue 3).
func BenchmarkPullStream(b *testing.B) {
	b.Run("subject", func(b *testing.B) {
		bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/sdk/internal/benchsource")
		benchPull(b, sdktest.LaunchSource(b, bin))
	})
	b.Run("baseline", func(b *testing.B) {
		benchPull(b, sdktest.ConnectSource(b, &synth.Source{}))
	})
	// The cost of making the data without gRPC, for reference.
	b.Run("direct", func(b *testing.B) {
		benchPull(b, &synth.Source{})
	})
}

func benchPull(b *testing.B, src sdk.Source) {
	config := fmt.Appendf(nil, "customers: %d\nbatch_size: 1000\n", benchCustomers)
	if _, err := src.Configure(b.Context(), sdk.ConfigureRequest{Instance: "bench", Config: config}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		n, traits := 0, 0
		err := src.Pull(b.Context(), "", func(batch *sdk.Batch) error {
			n += len(batch.Customers)
			for i := range batch.Customers {
				traits += len(batch.Customers[i].Traits)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if n != benchCustomers || traits != 8*benchCustomers {
			b.Fatalf("pulled %d customers with %d traits, want %d with %d", n, traits, benchCustomers, 8*benchCustomers)
		}
	}
	b.ReportMetric(float64(b.N*benchCustomers)/b.Elapsed().Seconds(), "rec/s")
}
