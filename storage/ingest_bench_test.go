package storage

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk/sdktest"
)

// BenchmarkIngestEvents is the storage half of an event webhook's group
// commit: a transaction inserting new events (deduplicated by source and
// id) and adding them to the daily rollups, into SQLite already holding
// 100,000 events of 10,000 customers. Sub-benchmarks by events per
// transaction: 50 (about what 1,000 events/s bring per group commit) and
// 2,000 (the group commit's maximum). It reports CPU per event beside the
// wall time, since other work on the machine moves the latter.
func BenchmarkIngestEvents(b *testing.B) {
	ctx := context.Background()
	db, err := Open(ctx, Config{Driver: SQLite, DSN: filepath.Join(b.TempDir(), "cohort.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	seq := 0
	batch := func(n int) ([]Event, []Rollup) {
		evs := make([]Event, n)
		rs := make([]Rollup, n)
		for i := range evs {
			seq++
			at := t0.Add(time.Duration(seq) * time.Millisecond)
			c := "cus_" + strconv.Itoa(seq*7919%10_000)
			evs[i] = Event{Source: "web", ID: "evt_" + strconv.Itoa(seq), CustomerID: c, Name: "purchase", Time: at, Value: 9.5, HasValue: true}
			rs[i] = Rollup{CustomerID: c, Name: "purchase", Day: int32(at.Unix() / 86400), Count: 1, Sum: 9.5, First: at, Last: at}
		}
		return evs, rs
	}
	write := func(evs []Event, rs []Rollup) error {
		return db.Tx(ctx, func(tx *Tx) error {
			fresh, err := tx.InsertEvents(evs)
			if err != nil {
				return err
			}
			if len(fresh) != len(evs) {
				b.Fatalf("%d of %d events new", len(fresh), len(evs))
			}
			return tx.AddRollups(rs)
		})
	}
	for range 50 {
		if err := write(batch(2000)); err != nil {
			b.Fatal(err)
		}
	}
	for _, size := range []int{50, 2000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				evs, rs := batch(size)
				c0 := sdktest.SelfCPU()
				b.StartTimer()
				if err := write(evs, rs); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += sdktest.SelfCPU() - c0
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/event")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*size), "cpu-µs/event")
		})
	}
}
