package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

func TestEventsDedupAndRollups(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
		evs := []storage.Event{
			{Source: "web", ID: "e1", CustomerID: "c1", Name: "purchase", Time: t0, Value: 20, HasValue: true},
			{Source: "web", ID: "e2", CustomerID: "c1", Name: "purchase", Time: t0.Add(time.Hour), Value: 5, HasValue: true},
			{Source: "app", ID: "e1", CustomerID: "c2", Name: "session", Time: t0},
		}
		var fresh []storage.Event
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			var err error
			fresh, err = tx.InsertEvents(evs)
			return err
		}))
		require.Len(t, fresh, 3, "same id from another source is a different event")

		// Replay e2 with a new e3: only e3 is new.
		replay := []storage.Event{evs[1], {Source: "web", ID: "e3", CustomerID: "c1", Name: "purchase", Time: t0.Add(-time.Hour), Value: 1, HasValue: true}}
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			var err error
			fresh, err = tx.InsertEvents(replay)
			if err != nil {
				return err
			}
			return tx.AddRollups([]storage.Rollup{
				{CustomerID: "c1", Name: "purchase", Day: 20513, Count: 2, Sum: 25, First: t0, Last: t0.Add(time.Hour)},
			})
		}))
		require.Len(t, fresh, 1)
		require.Equal(t, "e3", fresh[0].ID)
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			return tx.AddRollups([]storage.Rollup{{CustomerID: "c1", Name: "purchase", Day: 20513, Count: 1, Sum: 1, First: t0.Add(-time.Hour), Last: t0.Add(-time.Hour)}})
		}))
		var got []storage.Rollup
		require.NoError(t, db.EachRollup(ctx, func(r storage.Rollup) error { got = append(got, r); return nil }))
		require.Equal(t, []storage.Rollup{{CustomerID: "c1", Name: "purchase", Day: 20513, Count: 3, Sum: 26, First: t0.Add(-time.Hour), Last: t0.Add(time.Hour)}}, got)
	})
}

func TestConsentsAndCursor(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		cur, up, err := db.Cursor(ctx, "crm")
		require.NoError(t, err)
		require.Equal(t, "", cur)
		require.False(t, up)
		t1 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			if err := tx.InsertConsents([]storage.Consent{
				{CustomerID: "c1", Kind: "email", Status: storage.ConsentOptOut, Time: t1.Add(time.Hour), Source: "web", Basis: "unsubscribe link"},
				{CustomerID: "c1", Kind: "email", Status: storage.ConsentOptIn, Time: t1, Source: "crm", Basis: "signup form v2"},
			}); err != nil {
				return err
			}
			return tx.SetCursor("crm", "abc", true)
		}))
		cs, err := db.Consents(ctx, "c1")
		require.NoError(t, err)
		require.Len(t, cs, 2)
		require.Equal(t, storage.ConsentOptIn, cs[0].Status, "ordered by time")
		require.Equal(t, t1, cs[0].Time)
		require.Equal(t, "signup form v2", cs[0].Basis)
		require.False(t, cs[1].RecordedAt.IsZero())
		cur, up, err = db.Cursor(ctx, "crm")
		require.NoError(t, err)
		require.Equal(t, "abc", cur)
		require.True(t, up)
	})
}

func TestEnsureCustomersKeepsExisting(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		require.NoError(t, db.UpsertCustomers(ctx, []storage.Customer{{ID: "c1", Traits: []byte(`{"plan":"pro"}`)}}))
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error { return tx.EnsureCustomers([]string{"c1", "c2"}) }))
		c1, err := db.GetCustomer(ctx, "c1")
		require.NoError(t, err)
		require.JSONEq(t, `{"plan":"pro"}`, string(c1.Traits))
		c2, err := db.GetCustomer(ctx, "c2")
		require.NoError(t, err)
		require.JSONEq(t, `{}`, string(c2.Traits))
	})
}
