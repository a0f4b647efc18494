package sqlsource

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortd/cohort/plugins/sql/internal/testdb"
	"github.com/cohortd/cohort/sdk"
)

// cmpNoDescription compares traits by name and type.
var cmpNoDescription = cmpopts.IgnoreFields(sdk.Trait{}, "Description")

// base is a time well before now, so that rows stamped with it are older
// than any lag.
var base = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// eachDB runs f on a throwaway PostgreSQL and a throwaway MySQL database.
func eachDB(t *testing.T, f func(t *testing.T, db *testdb.DB)) {
	t.Run("postgres", func(t *testing.T) { f(t, testdb.Postgres(t)) })
	t.Run("mysql", func(t *testing.T) { f(t, testdb.MySQL(t)) })
}

// pick returns the PostgreSQL or the MySQL variant of a statement.
func pick(db *testdb.DB, pg, my string) string {
	if db.Driver == "postgres" {
		return pg
	}
	return my
}

// createPeople creates the table most tests read.
func createPeople(t *testing.T, db *testdb.DB) {
	t.Helper()
	db.Exec(t, pick(db,
		`CREATE TABLE people (id bigint PRIMARY KEY, name text, email text, score integer,
			updated_at timestamptz NOT NULL, deleted_at timestamptz)`,
		`CREATE TABLE people (id BIGINT PRIMARY KEY, name VARCHAR(100), email VARCHAR(100), score INT,
			updated_at DATETIME(6) NOT NULL, deleted_at DATETIME(6) NULL)`))
}

// person is one row of people.
type person struct {
	id      int
	name    string
	updated time.Time
}

func insertPeople(t *testing.T, db *testdb.DB, ps ...person) {
	t.Helper()
	for _, p := range ps {
		db.Exec(t, "INSERT INTO people (id, name, email, score, updated_at) VALUES (?, ?, ?, ?, ?)",
			p.id, p.name, fmt.Sprintf("p%d@example.com", p.id), p.id*10, p.updated)
	}
}

// config is a config for db with the given extra lines.
func config(db *testdb.DB, extra string) string {
	return fmt.Sprintf("driver: %s\ndsn: %s\n%s", db.Driver, strconv.Quote(db.DSN), extra)
}

const peopleConfig = `table: people
id_column: id
updated_at_column: updated_at
deleted_column: deleted_at
email: email
`

func newTestSource(t *testing.T) *Source {
	t.Helper()
	return New(WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))))
}

func configure(t *testing.T, s *Source, config string) sdk.SourceInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	info, err := s.Configure(ctx, sdk.ConfigureRequest{Instance: "crm", Config: []byte(config)})
	if err != nil {
		t.Fatalf("Configure: %v\nconfig:\n%s", err, config)
	}
	return info
}

// livePull runs a Pull in the background and hands its batches over a
// channel; the Pull is cancelled and awaited when the test ends (or stop
// is called).
type livePull struct {
	batches chan *sdk.Batch
	done    chan error
	cancel  context.CancelFunc
}

func startPull(t *testing.T, s *Source, cursor string) *livePull {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lp := &livePull{batches: make(chan *sdk.Batch, 1000), done: make(chan error, 1), cancel: cancel}
	go func() {
		lp.done <- s.Pull(ctx, cursor, func(b *sdk.Batch) error {
			select {
			case lp.batches <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { lp.stop(t) })
	return lp
}

// stop cancels the pull and waits for it to return.
func (lp *livePull) stop(t *testing.T) {
	lp.cancel()
	select {
	case <-lp.done:
		lp.done <- nil // later stops return at once
	case <-time.After(10 * time.Second):
		t.Error("Pull did not return within 10s of cancellation")
	}
}

// until reads batches until one satisfies ok, failing after a generous
// deadline, and returns every batch read.
func (lp *livePull) until(t *testing.T, what string, ok func(*sdk.Batch) bool) []*sdk.Batch {
	t.Helper()
	const patience = 30 * time.Second
	deadline := time.After(patience)
	var got []*sdk.Batch
	for {
		select {
		case b := <-lp.batches:
			got = append(got, b)
			if ok(b) {
				return got
			}
		case err := <-lp.done:
			lp.done <- err
			t.Fatalf("waiting for %s: Pull returned %v", what, err)
		case <-deadline:
			t.Fatalf("waiting for %s: nothing within %v (got %d batches)", what, patience, len(got))
		}
	}
}

func caughtUp(b *sdk.Batch) bool { return b.CaughtUp }

// pullCaughtUp pulls from cursor until the first CaughtUp batch and
// returns the batches up to it.
func pullCaughtUp(t *testing.T, s *Source, cursor string) []*sdk.Batch {
	t.Helper()
	lp := startPull(t, s, cursor)
	got := lp.until(t, "a caught-up batch", caughtUp)
	lp.stop(t)
	return got
}

// merged is what a list of batches sent, in order.
type merged struct {
	customers []sdk.Customer
	deletes   []string
	problems  []sdk.Problem
	cursor    string
}

func merge(bs []*sdk.Batch) merged {
	var m merged
	for _, b := range bs {
		m.customers = append(m.customers, b.Customers...)
		m.deletes = append(m.deletes, b.Deletes...)
		m.problems = append(m.problems, b.Problems...)
		if b.Cursor != "" {
			m.cursor = b.Cursor
		}
	}
	return m
}

func (m merged) ids() []string {
	ids := make([]string, len(m.customers))
	for i, c := range m.customers {
		ids[i] = c.ID
	}
	return ids
}

// byID returns the customer with id, failing the test if absent.
func (m merged) byID(t *testing.T, id string) sdk.Customer {
	t.Helper()
	for _, c := range m.customers {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("customer %s not sent; sent %v", id, m.ids())
	return sdk.Customer{}
}

// idRange is the ids from..to as strings.
func idRange(from, to int) []string {
	var ids []string
	for i := from; i <= to; i++ {
		ids = append(ids, strconv.Itoa(i))
	}
	return ids
}

// contains reports whether the batches sent customer id.
func sent(bs []*sdk.Batch, id string) bool {
	for _, b := range bs {
		if slices.ContainsFunc(b.Customers, func(c sdk.Customer) bool { return c.ID == id }) {
			return true
		}
	}
	return false
}
