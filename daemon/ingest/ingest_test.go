package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

var info = sdk.SourceInfo{Name: "test", Version: "1", Traits: []sdk.Trait{
	{Name: "plan", Type: sdk.TypeString},
	{Name: "age", Type: sdk.TypeNumber},
	{Name: "signed_up_at", Type: sdk.TypeTime},
}}

type recorder struct{ got []*ingest.Changes }

func (r *recorder) Committed(_ context.Context, ch *ingest.Changes) { r.got = append(r.got, ch) }

func newIngester(db *storage.DB, obs ...ingest.Observer) (*ingest.Ingester, *ingest.Validator) {
	clock := func() time.Time { return now }
	g := ingest.New(db, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), ingest.Options{Now: clock}, obs...)
	return g, ingest.NewValidator("crm", info, clock, 24*time.Hour)
}

func TestValidatorSkipsBadFieldsAndKeepsTheRest(t *testing.T) {
	v := ingest.NewValidator("crm", info, func() time.Time { return now }, 24*time.Hour)
	ch, problems := v.Batch(&sdk.Batch{
		Customers: []sdk.Customer{
			{ID: "c1", Traits: map[string]sdk.Value{"plan": sdk.String("pro"), "age": sdk.String("forty"), "shoe": sdk.Number(42)}},
			{ID: "c1", Traits: map[string]sdk.Value{"plan": sdk.String("free")}},
			{ID: "", Traits: map[string]sdk.Value{"plan": sdk.String("free")}},
			{ID: "c2", Traits: map[string]sdk.Value{"signed_up_at": sdk.Time(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)), "age": {}}},
		},
		Events: []sdk.Event{
			{ID: "e1", CustomerID: "c1", Name: "purchase", Time: now.Add(-time.Hour)},
			{ID: "e2", CustomerID: "c1", Name: "purchase", Time: now.Add(72 * time.Hour)},
			{ID: "e3", CustomerID: "", Name: "purchase", Time: now},
		},
		Consents: []sdk.ConsentChange{
			{CustomerID: "c1", Kind: "Email", Status: sdk.OptIn, Time: now},
			{CustomerID: "c1", Kind: "fax", Status: sdk.OptIn, Time: now},
		},
	})
	kinds := map[string]int{}
	for _, p := range problems {
		kinds[p.Kind]++
	}
	require.Equal(t, map[string]int{"wrong_type": 1, "unknown_trait": 1, "duplicate_id": 1, "missing_id": 2, "absurd_time": 2, "bad_consent": 1}, kinds, "%+v", problems)
	require.Len(t, ch.Customers, 2)
	require.Equal(t, map[string]sdk.Value{"plan": sdk.String("pro")}, ch.Customers[0].Traits, "good fields of a record with bad ones are kept")
	require.Equal(t, map[string]sdk.Value{"age": {}}, ch.Customers[1].Traits, "a null removes the trait")
	require.Len(t, ch.Events, 1)
	require.Len(t, ch.Consents, 1)
	require.Equal(t, "email", ch.Consents[0].Kind)
	for _, p := range problems {
		if p.Kind == "wrong_type" {
			require.Equal(t, "c1", p.CustomerID)
			require.Equal(t, "age", p.Field)
			require.Equal(t, "expected a number, got a string; the field was skipped", p.Message)
		}
	}
}

func TestCommitDedupsRollsUpAndStoresCursor(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rec := &recorder{}
		g, v := newIngester(db, rec)
		day := now.Add(-48 * time.Hour)
		batch := &sdk.Batch{
			Customers: []sdk.Customer{{ID: "c1", Traits: map[string]sdk.Value{"plan": sdk.String("pro")}}},
			Events: []sdk.Event{
				{ID: "e1", CustomerID: "c1", Name: "purchase", Time: day, Value: 30, HasValue: true},
				{ID: "e2", CustomerID: "ghost", Name: "purchase", Time: day.Add(time.Hour), Value: 12.5, HasValue: true},
			},
			Cursor: "pos-1",
		}
		require.NoError(t, g.Commit(ctx, v, batch))
		// A replay of the same batch (e.g. after a crash before the plugin saw
		// the ack) must not count the events twice.
		require.NoError(t, g.Commit(ctx, v, batch))
		require.NoError(t, g.Commit(ctx, v, &sdk.Batch{
			Events:   []sdk.Event{{ID: "e3", CustomerID: "c1", Name: "purchase", Time: day.Add(2 * time.Hour), Value: 10, HasValue: true}},
			Cursor:   "pos-2",
			CaughtUp: true,
		}))

		var rs []storage.Rollup
		require.NoError(t, db.EachRollup(ctx, func(r storage.Rollup) error { rs = append(rs, r); return nil }))
		sort.Slice(rs, func(i, j int) bool { return rs[i].CustomerID < rs[j].CustomerID })
		require.Len(t, rs, 2)
		require.Equal(t, int64(2), rs[0].Count)
		require.Equal(t, 40.0, rs[0].Sum)
		require.Equal(t, "ghost", rs[1].CustomerID)

		ghost, err := db.GetCustomer(ctx, "ghost")
		require.NoError(t, err, "an event for an unknown customer creates the profile")
		require.JSONEq(t, `{}`, string(ghost.Traits))
		c1, err := db.GetCustomer(ctx, "c1")
		require.NoError(t, err)
		var traits map[string]any
		require.NoError(t, json.Unmarshal(c1.Traits, &traits))
		require.Equal(t, "pro", traits["plan"])

		cur, up, err := db.Cursor(ctx, "crm")
		require.NoError(t, err)
		require.Equal(t, "pos-2", cur)
		require.True(t, up)
		require.True(t, g.CaughtUp("crm"))

		require.Len(t, rec.got, 3)
		require.Len(t, rec.got[0].Events, 2)
		require.Empty(t, rec.got[1].Events, "observers see only new events")
	})
}

func TestImportProgressIsLogged(t *testing.T) {
	db := storagetest.OpenSQLite(t)
	ctx := context.Background()
	clock := now
	var logs bytes.Buffer
	g := ingest.New(db, slog.New(slog.NewJSONHandler(&logs, nil)), prometheus.NewRegistry(), ingest.Options{Now: func() time.Time { return clock }})
	v := ingest.NewValidator("crm", info, func() time.Time { return clock }, 24*time.Hour)
	for i := range 3 {
		clock = clock.Add(3 * time.Second)
		require.NoError(t, g.Commit(ctx, v, &sdk.Batch{Customers: []sdk.Customer{{ID: fmt.Sprintf("c%d", i)}}, Cursor: fmt.Sprint(i)}))
	}
	require.NoError(t, g.Commit(ctx, v, &sdk.Batch{Customers: []sdk.Customer{{ID: "last"}}, Cursor: "end", CaughtUp: true}))
	require.NoError(t, g.Commit(ctx, v, &sdk.Batch{Customers: []sdk.Customer{{ID: "live"}}, Cursor: "live"}))
	out := logs.String()
	require.Contains(t, out, `"msg":"importing","component":"ingest","source":"crm","customers":3,"events":0`)
	require.Contains(t, out, `"msg":"source caught up","component":"ingest","source":"crm","customers":4,"events":0,"took":6000000000`)
	require.Equal(t, 1, strings.Count(out, `"msg":"source caught up"`), "live changes after catching up are not import progress")
}
