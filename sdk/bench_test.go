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

// BenchmarkPullPluginProcess streams synthetic customers from a source
// plugin process (built binary, AutoMTLS on), as the daemon would.
func BenchmarkPullPluginProcess(b *testing.B) {
	bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/sdk/internal/benchsource")
	benchPull(b, sdktest.LaunchSource(b, bin))
}

// BenchmarkPullInProcess streams the same customers from the same source
// served in this process over plugin.TestPluginGRPCConn.
func BenchmarkPullInProcess(b *testing.B) {
	benchPull(b, sdktest.ConnectSource(b, &synth.Source{}))
}

// BenchmarkPullDirect calls the source without gRPC: the cost of making
// the data, for reference.
func BenchmarkPullDirect(b *testing.B) {
	benchPull(b, &synth.Source{})
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
