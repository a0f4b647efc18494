// Package synth is a synthetic source of made-up customers, for benchmarks
// and SDK tests: every customer has eight traits (strings, numbers, a time,
// a bool) and the cursor is the number of customers sent.
package synth

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohortd/cohort/sdk"
)

// Config is the source's config.
type Config struct {
	// Customers is how many customers the backlog holds.
	Customers int `yaml:"customers"`
	// BatchSize is how many customers go in a batch (default 1000).
	BatchSize int `yaml:"batch_size"`
	// Live keeps Pull open after the backlog, as a live source does.
	Live bool `yaml:"live"`
}

// Source is the synthetic source. Configure before Pull.
type Source struct {
	cfg Config
}

var _ sdk.Source = (*Source)(nil)

var plans = []string{"free", "pro", "team", "enterprise"}
var countries = []string{"FR", "DE", "US", "JP", "BR"}
var names = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"}

// Configure reads the config.
func (s *Source) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	cfg := Config{BatchSize: 1000}
	if len(bytes.TrimSpace(req.Config)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(req.Config))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return sdk.SourceInfo{}, sdk.Errorf(sdk.InvalidConfig, "", "synth config: %v", err)
		}
	}
	if cfg.Customers < 0 {
		return sdk.SourceInfo{}, sdk.Errorf(sdk.InvalidConfig, "customers", "customers is %d, want 0 or more", cfg.Customers)
	}
	if cfg.BatchSize < 1 {
		return sdk.SourceInfo{}, sdk.Errorf(sdk.InvalidConfig, "batch_size", "batch_size is %d, want 1 or more", cfg.BatchSize)
	}
	s.cfg = cfg
	return sdk.SourceInfo{
		Name:    "synth",
		Version: "1.0.0",
		Traits: []sdk.Trait{
			{Name: "email", Type: sdk.TypeString},
			{Name: "first_name", Type: sdk.TypeString},
			{Name: "plan", Type: sdk.TypeString},
			{Name: "country", Type: sdk.TypeString},
			{Name: "ltv", Type: sdk.TypeNumber},
			{Name: "orders", Type: sdk.TypeNumber},
			{Name: "signed_up", Type: sdk.TypeTime},
			{Name: "vip", Type: sdk.TypeBool},
		},
		Contact: sdk.ContactFields{Email: "email"},
	}, nil
}

// Pull sends the customers after cursor in batches. It reuses one Batch:
// the SDK has converted a batch when send returns.
func (s *Source) Pull(ctx context.Context, cursor string, send func(*sdk.Batch) error) error {
	start := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil || n < 0 {
			return sdk.Errorf(sdk.InvalidArgument, "cursor", "cursor %q is not a customer count", cursor)
		}
		start = n
	}
	total, size := s.cfg.Customers, s.cfg.BatchSize
	b := &sdk.Batch{Customers: make([]sdk.Customer, size)}
	for i := range b.Customers {
		b.Customers[i].Traits = make(map[string]sdk.Value, 8)
	}
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	var buf []byte
	for off := start; off < total || off == start; off += size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := max(min(size, total-off), 0)
		b.Customers = b.Customers[:n]
		// One string holds this batch's ids and emails; each is a slice of it.
		buf = buf[:0]
		for i := range n {
			buf = strconv.AppendInt(append(buf, 'c'), int64(off+i), 10)
			buf = strconv.AppendInt(append(buf, "user"...), int64(off+i), 10)
			buf = append(buf, "@example.com"...)
		}
		all := string(buf)
		pos := 0
		for i := range n {
			id := off + i
			idLen := 1 + digits(id)
			emailLen := 4 + digits(id) + len("@example.com")
			c := &b.Customers[i]
			c.ID = all[pos : pos+idLen]
			t := c.Traits
			t["email"] = sdk.String(all[pos+idLen : pos+idLen+emailLen])
			pos += idLen + emailLen
			t["first_name"] = sdk.String(names[id%len(names)])
			t["plan"] = sdk.String(plans[id%len(plans)])
			t["country"] = sdk.String(countries[id%len(countries)])
			t["ltv"] = sdk.Number(float64(id%5000) * 1.25)
			t["orders"] = sdk.Number(float64(id % 37))
			t["signed_up"] = sdk.Time(base.Add(time.Duration(id) * time.Minute))
			t["vip"] = sdk.Bool(id%10 == 0)
		}
		b.Cursor = strconv.Itoa(off + n)
		b.CaughtUp = off+n >= total
		if err := send(b); err != nil {
			return err
		}
		if b.CaughtUp {
			break
		}
	}
	if s.cfg.Live {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func digits(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}
