package sdk

import (
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// benchBatch is a batch of 1000 made-up customers with eight traits each,
// like sdk/internal/synth's.
func benchBatch() *Batch {
	b := &Batch{Cursor: "1000", Customers: make([]Customer, 1000)}
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range b.Customers {
		b.Customers[i] = Customer{ID: "c" + strconv.Itoa(i), Traits: map[string]Value{
			"email":      String("user" + strconv.Itoa(i) + "@example.com"),
			"first_name": String("Ada"),
			"plan":       String("pro"),
			"country":    String("FR"),
			"ltv":        Number(float64(i) * 1.25),
			"orders":     Number(float64(i % 37)),
			"signed_up":  Time(base.Add(time.Duration(i) * time.Minute)),
			"vip":        Bool(i%10 == 0),
		}}
	}
	return b
}

func reportRecords(b *testing.B, perOp int) {
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "rec/s")
}

// BenchmarkBatchEncode is the plugin side of Pull: Batch to wire bytes.
func BenchmarkBatchEncode(b *testing.B) {
	batch := benchBatch()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendBatch(buf[:0], batch)
	}
	reportRecords(b, len(batch.Customers))
}

// BenchmarkBatchDecode is the host side of Pull: wire bytes to the flat
// form the daemon consumes.
func BenchmarkBatchDecode(b *testing.B) {
	batch := benchBatch()
	buf, _ := appendBatch(nil, batch)
	dec := &flatDecoder{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec.decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	reportRecords(b, len(batch.Customers))
}

// BenchmarkBatchEncodeIndexed is BenchmarkBatchEncode in the compact form
// (Customer.indexed_traits), as sent to hosts that read it.
func BenchmarkBatchEncodeIndexed(b *testing.B) {
	batch := benchBatch()
	names := &traitIndex{}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendBatchTo(buf[:0], batch, names)
	}
	reportRecords(b, len(batch.Customers))
}

// BenchmarkBatchDecodeIndexed is BenchmarkBatchDecode in the compact form.
func BenchmarkBatchDecodeIndexed(b *testing.B) {
	batch := benchBatch()
	names := &traitIndex{}
	first, _ := appendBatchTo(nil, batch, names) // carries the names
	buf, _ := appendBatchTo(nil, batch, names)
	b.Logf("bytes per batch: %d compact, %d with maps", len(buf), len(must(appendBatch(nil, batch))))
	dec := &flatDecoder{}
	if _, err := dec.decode(first); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec.decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	reportRecords(b, len(batch.Customers))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// BenchmarkBatchDecodeMaps is wire bytes to a Batch with a map per
// customer, as sdk.Source's Pull hands it out.
func BenchmarkBatchDecodeMaps(b *testing.B) {
	batch := benchBatch()
	buf, _ := appendBatch(nil, batch)
	dec := &flatDecoder{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeBatch(buf, dec); err != nil {
			b.Fatal(err)
		}
	}
	reportRecords(b, len(batch.Customers))
}

// BenchmarkBatchEncodeProtobuf is the same through generated messages and
// proto.Marshal, for comparison.
func BenchmarkBatchEncodeProtobuf(b *testing.B) {
	batch := benchBatch()
	b.ReportAllocs()
	for b.Loop() {
		m, _ := batchToPB(batch)
		if _, err := proto.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
	reportRecords(b, len(batch.Customers))
}

// BenchmarkBatchDecodeProtobuf is the same through proto.Unmarshal and
// generated messages, for comparison.
func BenchmarkBatchDecodeProtobuf(b *testing.B) {
	batch := benchBatch()
	buf, _ := appendBatch(nil, batch)
	b.ReportAllocs()
	for b.Loop() {
		var m pluginv1.Batch
		if err := proto.Unmarshal(buf, &m); err != nil {
			b.Fatal(err)
		}
		batchFromPB(&m)
	}
	reportRecords(b, len(batch.Customers))
}

// BenchmarkCustomerMaps builds only the trait maps a decoded batch needs:
// the floor of BenchmarkBatchDecode.
func BenchmarkCustomerMaps(b *testing.B) {
	batch := benchBatch()
	keys := make([]string, 0, 8)
	for k := range batch.Customers[0].Traits {
		keys = append(keys, k)
	}
	out := make([]map[string]Value, len(batch.Customers))
	b.ReportAllocs()
	for b.Loop() {
		for i := range out {
			m := make(map[string]Value, len(keys))
			for _, k := range keys {
				m[k] = Value{Type: TypeString, Str: k}
			}
			out[i] = m
		}
	}
	reportRecords(b, len(out))
}
