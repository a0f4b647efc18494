package ingest_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
	"github.com/cohortd/cohort/storage"
)

// benchCustomers is the import size (COHORT_BENCH_CUSTOMERS, default 1M).
func benchCustomers(b *testing.B) int {
	if s := os.Getenv("COHORT_BENCH_CUSTOMERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("COHORT_BENCH_CUSTOMERS: %v", err)
		}
		return n
	}
	return 1_000_000
}

// writeCRM writes a synthetic 14-trait CRM export (plus the id column).
func writeCRM(b *testing.B, path string, n int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	plans := []string{"free", "basic", "pro", "enterprise"}
	countries := []string{"US", "GB", "DE", "FR", "ES", "JP", "AU", "BR", "IN", "CA"}
	devices := []string{"ios", "android", "web"}
	fmt.Fprintln(w, "customer_id,email,plan,country,city,age,gender,signed_up_at,device,app_version,lifetime_value,orders,vip,interests,score")
	for i := range n {
		fmt.Fprintf(w, "cus_%07d,user%d@example.com,%s,%s,City%d,%d,%s,2025-%02d-%02d,%s,5.%d.0,%.2f,%d,%t,%s,%.3f\n",
			i, i, plans[r.IntN(4)], countries[r.IntN(10)], r.IntN(500), 18+r.IntN(60), []string{"f", "m", "x"}[r.IntN(3)],
			1+r.IntN(12), 1+r.IntN(28), devices[r.IntN(3)], r.IntN(4), r.Float64()*2000, r.IntN(40), r.IntN(10) == 0,
			[]string{"running|books", "travel", "gaming|music|yoga", ""}[r.IntN(4)], r.Float64())
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// BenchmarkFirstImport: the first import of N customers from the csv source
// plugin (a real process) into SQLite through Ingester.Pull, as the daemon
// runs it (every commit records its cursor), beside the bare storage floor:
// the same N customers upserted directly in batches of 1,000, measured in
// the same run.
func BenchmarkFirstImport(b *testing.B) {
	n := benchCustomers(b)
	dir := b.TempDir()
	csvPath := filepath.Join(dir, "crm.csv")
	writeCRM(b, csvPath, n)
	bin := sdktest.BuildPlugin(b, "github.com/cohortd/cohort/plugins/csv")
	ctx := context.Background()

	b.Run("subject", func(b *testing.B) {
		for range b.N {
			db := openBenchDB(b)
			src := sdktest.LaunchSource(b, bin)
			start := time.Now()
			info, err := src.Configure(ctx, sdk.ConfigureRequest{Instance: "crm", Config: []byte(fmt.Sprintf("path: %s\nid_column: customer_id\nemail: email\nwatch: false\ncolumns:\n  interests: {type: list}\n", csvPath))})
			if err != nil {
				b.Fatal(err)
			}
			g := ingest.New(db, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), ingest.Options{})
			v := ingest.NewValidator("crm", info, time.Now, 24*time.Hour)
			if err := g.Pull(ctx, v, src, ""); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			if got, _ := db.CountCustomers(ctx); got != int64(n) {
				b.Fatalf("imported %d customers, want %d", got, n)
			}
			b.ReportMetric(elapsed.Seconds(), "s")
			b.ReportMetric(float64(n)/elapsed.Seconds(), "customers/s")
		}
	})
	b.Run("baseline", func(b *testing.B) {
		rows := make([]storage.Customer, n)
		for i := range rows {
			rows[i] = storage.Customer{ID: fmt.Sprintf("cus_%07d", i), Traits: []byte(fmt.Sprintf(
				`{"email":"user%d@example.com","plan":"pro","country":"DE","city":"City1","age":40,"gender":"f","signed_up_at":"2025-03-04T00:00:00.000Z","device":"ios","app_version":"5.1.0","lifetime_value":120.5,"orders":3,"vip":false,"interests":["travel"],"score":0.5}`, i))}
		}
		for range b.N {
			db := openBenchDB(b)
			start := time.Now()
			for i := 0; i < n; i += 1000 {
				if err := db.UpsertCustomers(ctx, rows[i:min(i+1000, n)]); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(elapsed.Seconds(), "s")
			b.ReportMetric(float64(n)/elapsed.Seconds(), "customers/s")
		}
	})
}

func openBenchDB(b *testing.B) *storage.DB {
	b.Helper()
	db, err := storage.Open(context.Background(), storage.Config{Driver: storage.SQLite, DSN: filepath.Join(b.TempDir(), "cohort.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}
