// Package synth is a synthetic source of made-up customers, for benchmarks
// and SDK tests: every customer has eight traits (strings, numbers, a time,
// a bool) and the cursor is the number of customers sent.
package synth

import (
	"bytes"
	"context"
	"strconv"
	"sync"
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
	mu  sync.Mutex
	cfg Config // a Pull reads it once, at its start
}

var (
	_ sdk.Source     = (*Source)(nil)
	_ sdk.FlatSource = (*Source)(nil)
)

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
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
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

// Pull sends the customers after cursor in batches, in map form. It
// reuses one Batch: the SDK has converted a batch when send returns.
func (s *Source) Pull(ctx context.Context, cursor string, send func(*sdk.Batch) error) error {
	b := &sdk.Batch{Customers: make([]sdk.Customer, s.config().BatchSize)}
	for i := range b.Customers {
		b.Customers[i].Traits = make(map[string]sdk.Value, 8)
	}
	return s.generate(ctx, cursor, func(off, n int, all string, cursor string, caughtUp bool) error {
		b.Customers = b.Customers[:n]
		each(off, n, all, func(i int, id, email string, v *values) {
			c := &b.Customers[i]
			c.ID = id
			t := c.Traits
			t["email"] = sdk.String(email)
			t["first_name"] = sdk.String(v.firstName)
			t["plan"] = sdk.String(v.plan)
			t["country"] = sdk.String(v.country)
			t["ltv"] = sdk.Number(v.ltv)
			t["orders"] = sdk.Number(v.orders)
			t["signed_up"] = sdk.Time(v.signedUp)
			t["vip"] = sdk.Bool(v.vip)
		})
		b.Cursor, b.CaughtUp = cursor, caughtUp
		return send(b)
	})
}

// PullFlat sends the same batches as Pull in flat form, as a plugin that
// builds no maps does. It reuses one FlatBatch.
func (s *Source) PullFlat(ctx context.Context, cursor string, send func(*sdk.FlatBatch) error) error {
	b := &sdk.FlatBatch{}
	var (
		email     = b.Name("email")
		firstName = b.Name("first_name")
		plan      = b.Name("plan")
		country   = b.Name("country")
		ltv       = b.Name("ltv")
		orders    = b.Name("orders")
		signedUp  = b.Name("signed_up")
		vip       = b.Name("vip")
	)
	return s.generate(ctx, cursor, func(off, n int, all string, cursor string, caughtUp bool) error {
		b.Reset()
		each(off, n, all, func(_ int, id, em string, v *values) {
			b.AddCustomer(id)
			b.AddString(email, em)
			b.AddString(firstName, v.firstName)
			b.AddString(plan, v.plan)
			b.AddString(country, v.country)
			b.AddNumber(ltv, v.ltv)
			b.AddNumber(orders, v.orders)
			b.AddTime(signedUp, v.signedUp)
			b.AddBool(vip, v.vip)
		})
		b.Cursor, b.CaughtUp = cursor, caughtUp
		return send(b)
	})
}

// generate calls batch for each batch after cursor with the offset and
// size of the batch, one string holding its ids and emails (see each), and
// the batch's cursor and caught-up mark; then, for a live source, waits
// for ctx.
func (s *Source) generate(ctx context.Context, cursor string, batch func(off, n int, all, cursor string, caughtUp bool) error) error {
	start := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil || n < 0 {
			return sdk.Errorf(sdk.InvalidArgument, "cursor", "cursor %q is not a customer count", cursor)
		}
		start = n
	}
	cfg := s.config()
	total, size := cfg.Customers, cfg.BatchSize
	var buf []byte
	for off := start; off < total || off == start; off += size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := max(min(size, total-off), 0)
		// One string holds this batch's ids and emails; each is a slice of it.
		buf = buf[:0]
		for i := range n {
			buf = strconv.AppendInt(append(buf, 'c'), int64(off+i), 10)
			buf = strconv.AppendInt(append(buf, "user"...), int64(off+i), 10)
			buf = append(buf, "@example.com"...)
		}
		caughtUp := off+n >= total
		if err := batch(off, n, string(buf), strconv.Itoa(off+n), caughtUp); err != nil {
			return err
		}
		if caughtUp {
			break
		}
	}
	if cfg.Live {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *Source) config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// values are a customer's traits but for the email.
type values struct {
	firstName, plan, country string
	ltv, orders              float64
	signedUp                 time.Time
	vip                      bool
}

var base = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// each calls fn for the n customers from off, whose ids and emails are
// consecutive in all.
func each(off, n int, all string, fn func(i int, id, email string, v *values)) {
	pos := 0
	var v values
	for i := range n {
		id := off + i
		idLen := 1 + digits(id)
		emailLen := 4 + digits(id) + len("@example.com")
		v = values{
			firstName: names[id%len(names)],
			plan:      plans[id%len(plans)],
			country:   countries[id%len(countries)],
			ltv:       float64(id%5000) * 1.25,
			orders:    float64(id % 37),
			signedUp:  base.Add(time.Duration(id) * time.Minute),
			vip:       id%10 == 0,
		}
		fn(i, all[pos:pos+idLen], all[pos+idLen:pos+idLen+emailLen], &v)
		pos += idLen + emailLen
	}
}

func digits(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// MapsOnly is the synthetic source without PullFlat: served as a plugin,
// it builds its batches with maps.
// (Source is a named field, not embedded: embedding would bring PullFlat.)
type MapsOnly struct{ Source *Source }

var _ sdk.Source = MapsOnly{}

// Configure reads the config.
func (m MapsOnly) Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.SourceInfo, error) {
	return m.Source.Configure(ctx, req)
}

// Pull is Source.Pull.
func (m MapsOnly) Pull(ctx context.Context, cursor string, send func(*sdk.Batch) error) error {
	return m.Source.Pull(ctx, cursor, send)
}
