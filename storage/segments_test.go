package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/storage"
	"github.com/cohortd/cohort/storage/storagetest"
)

func TestSegmentDiffsSizesAndChanges(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		at := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
		var entered []string
		for i := range 150 {
			entered = append(entered, fmt.Sprintf("c%03d", i))
		}
		var pass1, pass2 int64
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			var err error
			if pass1, err = tx.BeginPass(storage.PassFull, at); err != nil {
				return err
			}
			if err := tx.ApplyDiff("vip", entered, nil, at, pass1); err != nil {
				return err
			}
			if err := tx.RecordSize(storage.SegmentSize{Segment: "vip", Pass: pass1, At: at, Size: 150, Entered: 150}); err != nil {
				return err
			}
			return tx.FinishPass(pass1, 1000, 150)
		}))
		require.NoError(t, db.Tx(ctx, func(tx *storage.Tx) error {
			var err error
			if pass2, err = tx.BeginPass(storage.PassIncremental, at.Add(time.Hour)); err != nil {
				return err
			}
			if err := tx.ApplyDiff("vip", []string{"new1"}, []string{"c000", "c001"}, at.Add(time.Hour), pass2); err != nil {
				return err
			}
			return tx.RecordSize(storage.SegmentSize{Segment: "vip", Pass: pass2, At: at.Add(time.Hour), Size: 149, Entered: 1, Exited: 2, Held: "min_size 500"})
		}))
		members := map[string]bool{}
		require.NoError(t, db.EachSegmentMember(ctx, "vip", func(_, id string) error { members[id] = true; return nil }))
		require.Len(t, members, 149)
		require.True(t, members["new1"])
		require.False(t, members["c000"])

		chs, err := db.SegmentChanges(ctx, 0, 1000)
		require.NoError(t, err)
		require.Len(t, chs, 153)
		for i := 1; i < len(chs); i++ {
			require.Greater(t, chs[i].Seq, chs[i-1].Seq, "changes are numbered in order")
		}
		last := chs[len(chs)-3:]
		require.Equal(t, []string{"enter", "exit", "exit"}, []string{last[0].Change, last[1].Change, last[2].Change})
		require.Equal(t, pass2, last[0].Pass)
		more, err := db.SegmentChanges(ctx, chs[150].Seq, 10)
		require.NoError(t, err)
		require.Len(t, more, 2)

		sizes, err := db.SizeHistory(ctx, "vip", at)
		require.NoError(t, err)
		require.Len(t, sizes, 2)
		require.Equal(t, int64(149), sizes[1].Size)
		require.Equal(t, "min_size 500", sizes[1].Held)
	})
}
