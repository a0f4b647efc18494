package sdktest

import (
	"slices"
	"sync"
	"testing"

	"github.com/cohortd/cohort/sdk"
)

// SendAll sends msgs through ch in Sends of at most batch messages from
// senders goroutines, as the daemon's dispatcher workers do, and fails tb
// for a Send that fails or a message not accepted. It is for benchmarks
// and load tests of channel plugins.
func SendAll(tb testing.TB, ch sdk.Channel, msgs []sdk.Message, batch, senders int) {
	tb.Helper()
	var wg sync.WaitGroup
	chunks := make(chan []sdk.Message)
	for range senders {
		wg.Go(func() {
			// A failed Send does not stop the worker: the rest are still
			// taken, so the feeder never waits for a worker that left.
			for chunk := range chunks {
				results, err := ch.Send(tb.Context(), chunk)
				if err != nil {
					tb.Error(err)
					continue
				}
				for _, r := range results {
					if r.Status != sdk.Accepted {
						tb.Errorf("%s: %v %s", r.Key, r.Status, r.Reason)
					}
				}
			}
		})
	}
	for chunk := range slices.Chunk(msgs, batch) {
		chunks <- chunk
	}
	close(chunks)
	wg.Wait()
}
