package sdk_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/internal/synth"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// benchCustomers is how many customers one benchmark iteration pulls.
const benchCustomers = 1_000_000

// BenchmarkPullStream streams synthetic customers (8 traits each, batches of
// 1000, built in flat form: sdk.FlatSource) from a source plugin process
// (the built binary, AutoMTLS on, as the daemon launches it) — the subject —
// beside the same source served in this process over
// plugin.TestPluginGRPCConn — the baseline — in the same run.
// Both are read with sdk.PullFlat, in the flat form the daemon's ingest
// consumes, each timed after one untimed pull of the same stream. `make
// bench` prints them side by side with the target (issue 3).
func BenchmarkPullStream(b *testing.B) {
	b.Run("subject", func(b *testing.B) {
		bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/sdk/internal/benchsource")
		benchPull(b, sdktest.LaunchSource(b, bin))
	})
	b.Run("baseline", func(b *testing.B) {
		benchPull(b, sdktest.ConnectSource(b, &synth.Source{}))
	})
	// A plugin process building its batches with maps (sdk.Source's Pull)
	// rather than in flat form (sdk.FlatSource), for reference.
	b.Run("mapsource", func(b *testing.B) {
		bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/sdk/internal/benchsourcemaps")
		benchPull(b, sdktest.LaunchSource(b, bin))
	})
	// The plugin process pulled as a host that predates the compact stream
	// forms (a message per batch, traits in maps), for reference.
	b.Run("legacy", func(b *testing.B) {
		bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/sdk/internal/benchsource")
		benchPull(b, sdk.LegacyPull(sdktest.LaunchSource(b, bin)))
	})
	// The cost of making the data without gRPC (the source's flat batches
	// in process), for reference.
	b.Run("direct", func(b *testing.B) {
		benchPull(b, &synth.Source{})
	})
	// The plugin process read in map form (sdk.Source's Pull), as the daemon
	// read it before the flat form, for reference.
	b.Run("maps", func(b *testing.B) {
		bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/sdk/internal/benchsource")
		src := sdktest.LaunchSource(b, bin)
		benchPullWith(b, src, func(ctx context.Context) (n, traits int, err error) {
			err = src.Pull(ctx, "", func(batch *sdk.Batch) error {
				n += len(batch.Customers)
				for i := range batch.Customers {
					traits += len(batch.Customers[i].Traits)
				}
				return nil
			})
			return n, traits, err
		})
	})
}

// benchPull pulls in flat form with sdk.PullFlat.
func benchPull(b *testing.B, src sdk.Source) {
	benchPullWith(b, src, func(ctx context.Context) (n, traits int, err error) {
		err = sdk.PullFlat(ctx, src, "", func(batch *sdk.FlatBatch) error {
			n += len(batch.Customers)
			for i := range batch.Customers {
				traits += len(batch.CustomerTraits(i))
			}
			return nil
		})
		return n, traits, err
	})
}

// benchPullWith configures src and times pull, which counts what it pulled.
func benchPullWith(b *testing.B, src sdk.Source, pull func(context.Context) (n, traits int, err error)) {
	config := fmt.Appendf(nil, "customers: %d\nbatch_size: 1000\n", benchCustomers)
	if _, err := src.Configure(b.Context(), sdk.ConfigureRequest{Instance: "bench", Config: config}); err != nil {
		b.Fatal(err)
	}
	// One untimed pull first, for every row alike: the first stream after
	// a start is slower on both ends for reasons a daemon that has been
	// pulling does not have (heaps that start small and are collected
	// often until they grow, buffers and windows still small), and single
	// cold streams swung the figure by a third between runs.
	if _, _, err := pull(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		n, traits, err := pull(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if n != benchCustomers || traits != 8*benchCustomers {
			b.Fatalf("pulled %d customers with %d traits, want %d with %d", n, traits, benchCustomers, 8*benchCustomers)
		}
	}
	b.ReportMetric(float64(b.N*benchCustomers)/b.Elapsed().Seconds(), "rec/s")
}
