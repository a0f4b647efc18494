package storage

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk/sdktest"
)

// benchSegments are BenchmarkFullPass's ten segments and their sizes per
// million customers after its priming pass; the first six are the ones its
// mutations flip.
var benchSegments = []struct {
	name string
	size int
}{
	{"young_women", 45947}, {"dach", 197140}, {"modern_mobile", 427354}, {"outdoor_runners", 45475},
	{"new_free", 9326}, {"vip_buyers", 30088},
	{"frequent_buyers", 197579}, {"high_value", 400003}, {"lapsed_buyers", 401339}, {"champions", 177506},
}

// BenchmarkDiffWriter is the persistence half of BenchmarkFullPass
// (daemon/segment) without the profile store: SQLite holds the same
// membership (COHORT_BENCH_CUSTOMERS, default 1,000,000 customers "cus_N",
// ~1.93M memberships over ten segments, inserted in id order as the priming
// pass does), and each timed transaction writes one pass's diff: 1% of the
// customers each entering or leaving one of six segments, through
// DiffWriter, committed. The log is checkpointed between passes, untimed.
func BenchmarkDiffWriter(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("COHORT_BENCH_CUSTOMERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Skipf("COHORT_BENCH_CUSTOMERS=%q is not a number of at least 100", v)
		}
	}
	ctx := context.Background()
	db, err := Open(ctx, Config{Driver: SQLite, DSN: filepath.Join(b.TempDir(), "cohort.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

	// Membership: customer i is in segment s when its hash falls under
	// the segment's share; primed in SQL, mirrored in Go.
	member := make([][]bool, len(benchSegments))
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	var pass int64
	err = db.Tx(ctx, func(tx *Tx) error {
		var err error
		if pass, err = tx.BeginPass(PassFull, at); err != nil {
			return err
		}
		w := tx.DiffWriter(pass, at)
		for s, seg := range benchSegments {
			member[s] = make([]bool, n)
			var ids []string
			for i := range n {
				if r.IntN(1_000_000) < seg.size {
					member[s][i] = true
					ids = append(ids, "cus_"+strconv.Itoa(i))
				}
			}
			if err := w.Add(seg.name, ids, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("primed in %s", time.Since(start).Round(time.Millisecond))

	perm := r.Perm(n)
	var cpu time.Duration
	target := n / 100
	for b.Loop() {
		b.StopTimer()
		if _, err := db.Checkpoint(ctx); err != nil {
			b.Fatal(err)
		}
		var entered, exited [6][]string
		for k, i := range perm[:target] {
			s := k % 6
			id := "cus_" + strconv.Itoa(i)
			if member[s][i] {
				exited[s] = append(exited[s], id)
			} else {
				entered[s] = append(entered[s], id)
			}
			member[s][i] = !member[s][i]
		}
		c0 := sdktest.SelfCPU()
		b.StartTimer()
		var err error
		pprof.Do(ctx, pprof.Labels("bench", "diffwriter"), func(ctx context.Context) {
			err = benchPass(ctx, db, at, n, target, &entered, &exited)
		})
		b.StopTimer()
		cpu += sdktest.SelfCPU() - c0
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/pass")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/pass")
}

// benchPass writes one pass's changes in one transaction.
func benchPass(ctx context.Context, db *DB, at time.Time, n, target int, entered, exited *[6][]string) error {
	return db.Tx(ctx, func(tx *Tx) error {
		pass, err := tx.BeginPass(PassFull, at)
		if err != nil {
			return err
		}
		w := tx.DiffWriter(pass, at)
		for s := range 6 {
			if err := w.Add(benchSegments[s].name, entered[s], exited[s]); err != nil {
				return err
			}
		}
		return tx.FinishPass(pass, n, target)
	})
}
