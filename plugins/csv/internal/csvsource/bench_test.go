package csvsource

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/sdktest"
)

// writeSynthetic writes a 14-column CRM export with rows made-up customers:
// strings, numbers (some blank), a bool, dates, RFC 3339 times and a list.
func writeSynthetic(tb testing.TB, dir string, rows int) string {
	tb.Helper()
	path := filepath.Join(dir, "customers.csv")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "customerID,Email,First Name,LastName,Country,Plan,SignedUpAt,LastSeen,Age,MonthlySpend,TotalSpend,Orders,VIP,Tags")
	countries := []string{"US", "DE", "FR", "GB", "BR", "IN", "JP"}
	plans := []string{"free", "basic", "pro", "enterprise"}
	tags := []string{"a|b", "b", "", "c|d|e", "a"}
	for i := range rows {
		total := fmt.Sprintf("%d.%02d", i%5000, i%100)
		if i%1000 == 7 {
			total = ""
		}
		fmt.Fprintf(w, "C%07d,user%d@example.com,First%d,Last%d,%s,%s,2024-%02d-%02d,2025-%02d-%02dT%02d:%02d:00Z,%d,%d.%02d,%s,%d,%t,%s\n",
			i, i, i%997, i%991, countries[i%len(countries)], plans[i%len(plans)],
			1+i%12, 1+i%28, 1+i%12, 1+i%28, i%24, i%60,
			18+i%60, i%300, i%100, total, i%40, i%9 == 0, tags[i%len(tags)])
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// writeSyntheticEvents writes an events export of rows made-up events: an
// id, a customer, one of four names, an RFC 3339 time, and a value on a
// third of the rows (the shape of examples/shop/data/events.csv).
func writeSyntheticEvents(tb testing.TB, dir string, rows int) string {
	tb.Helper()
	path := filepath.Join(dir, "events.csv")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "event_id,customer_id,event,time,value")
	names := []string{"purchase", "app_open", "page_view", "signup"}
	for i := range rows {
		value := ""
		if i%3 == 0 {
			value = fmt.Sprintf("%d.%02d", i%500, i%100)
		}
		fmt.Fprintf(w, "evt_%07d,C%07d,%s,2025-%02d-%02dT%02d:%02d:%02dZ,%s\n",
			i, i%20000, names[i%len(names)], 1+i%12, 1+i%28, i%24, i%60, (i/60)%60, value)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkParse measures a full Pull of a 100k-row, 14-column file (hash,
// parse, convert into batches; no transport) and reports rows/s of wall
// time and rows per CPU second (robust to other load on the machine).
// Beside it, in the same run: the baseline encoding/csv reading the same
// file and nothing else, and what the map form (sdk.Customer) would cost:
// reading plus one map[string]sdk.Value of 13 traits per row. The source
// builds flat batches (sdk.FlatSource), which the pull measures.
func BenchmarkParse(b *testing.B) {
	const rows = 100_000
	path := writeSynthetic(b, b.TempDir(), rows)
	ctx := context.Background()
	report := func(b *testing.B, cpu0 time.Duration) {
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		if cpu := sdktest.SelfCPU() - cpu0; cpu > 0 {
			b.ReportMetric(float64(rows)*float64(b.N)/cpu.Seconds(), "rows/cpu-s")
		}
	}
	b.Run("baseline=csv.Reader", func(b *testing.B) {
		cpu0 := sdktest.SelfCPU()
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			cr := newCSVReader(f, ',')
			n := -1
			for {
				if _, err := cr.Read(); err != nil {
					break
				}
				n++
			}
			f.Close()
			if n != rows {
				b.Fatalf("read %d rows, want %d", n, rows)
			}
		}
		report(b, cpu0)
	})
	b.Run("maps=csv.Reader+traits_map", func(b *testing.B) {
		cpu0 := sdktest.SelfCPU()
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			cr := newCSVReader(f, ',')
			header, _ := readHeader(cr)
			batch := make([]sdk.Customer, 0, defaultBatch)
			for {
				rec, err := cr.Read()
				if err != nil {
					break
				}
				traits := make(map[string]sdk.Value, len(header)-1)
				for i := 1; i < len(rec); i++ {
					traits[header[i]] = sdk.String(rec[i])
				}
				batch = append(batch, sdk.Customer{ID: rec[0], Traits: traits})
				if len(batch) == defaultBatch {
					batch = make([]sdk.Customer, 0, defaultBatch)
				}
			}
			f.Close()
		}
		report(b, cpu0)
	})
	b.Run("pull", func(b *testing.B) {
		s := New(WithLogger(quietLogger()))
		cfg := fmt.Sprintf("path: %s\nid_column: customerID\nemail: Email\nwatch: false\ncolumns:\n  Tags: {type: list}\n", path)
		if _, err := s.Configure(ctx, sdk.ConfigureRequest{Config: []byte(cfg)}); err != nil {
			b.Fatal(err)
		}
		n := 0
		cpu0 := sdktest.SelfCPU()
		for b.Loop() {
			n = 0
			// In flat form, as the plugin serves it.
			err := s.PullFlat(ctx, "", func(bt *sdk.FlatBatch) error {
				n += len(bt.Customers)
				if len(bt.Problems) > 0 {
					return fmt.Errorf("unexpected problem: %+v", bt.Problems[0])
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if n != rows {
			b.Fatalf("pulled %d customers, want %d", n, rows)
		}
		report(b, cpu0)
	})
}

// BenchmarkParseEvents measures a full Pull of a 100k-row events file
// (and a customers file of one row), to set beside BenchmarkParse/pull:
// an event row must not cost more than a customer row.
func BenchmarkParseEvents(b *testing.B) {
	const rows = 100_000
	dir := b.TempDir()
	events := writeSyntheticEvents(b, dir, rows)
	cust := filepath.Join(dir, "crm.csv")
	if err := os.WriteFile(cust, []byte("id\nC1\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	s := New(WithLogger(quietLogger()))
	cfg := fmt.Sprintf("path: %s\nid_column: id\nwatch: false\nevents:\n  path: %s\n  id_column: event_id\n  customer_column: customer_id\n  name_column: event\n  time_column: time\n  value_column: value\n", cust, events)
	if _, err := s.Configure(ctx, sdk.ConfigureRequest{Config: []byte(cfg)}); err != nil {
		b.Fatal(err)
	}
	n := 0
	cpu0 := sdktest.SelfCPU()
	for b.Loop() {
		n = 0
		err := s.Pull(ctx, "", func(bt *sdk.Batch) error {
			n += len(bt.Events)
			if len(bt.Problems) > 0 {
				return fmt.Errorf("unexpected problem: %+v", bt.Problems[0])
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if n != rows {
		b.Fatalf("pulled %d events, want %d", n, rows)
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	if cpu := sdktest.SelfCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(rows)*float64(b.N)/cpu.Seconds(), "rows/cpu-s")
	}
}

// BenchmarkConfigure measures type inference over the same file.
func BenchmarkConfigure(b *testing.B) {
	const rows = 100_000
	path := writeSynthetic(b, b.TempDir(), rows)
	ctx := context.Background()
	s := New(WithLogger(quietLogger()))
	cfg := fmt.Sprintf("path: %s\nid_column: customerID\nwatch: false\n", path)
	cpu0 := sdktest.SelfCPU()
	for b.Loop() {
		if _, err := s.Configure(ctx, sdk.ConfigureRequest{Config: []byte(cfg)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	if cpu := sdktest.SelfCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(rows)*float64(b.N)/cpu.Seconds(), "rows/cpu-s")
	}
}
