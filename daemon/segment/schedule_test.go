package segment

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestScheduleAcrossDST: a daily 09:00 schedule in New York fires at 09:00
// local time on both sides of the 2026 spring-forward (8 March), so its UTC
// time moves from 14:00 to 13:00; a 02:30 schedule does not fire on the day
// 02:30 does not exist, and fires once on the day 01:00-02:00 repeats.
func TestScheduleAcrossDST(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	got, err := Next("0 9 * * *", ny, time.Date(2026, 3, 6, 12, 0, 0, 0, ny), 3)
	require.NoError(t, err)
	utc := func(ts []time.Time) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.UTC().Format(time.RFC3339))
		}
		return out
	}
	require.Equal(t, []string{"2026-03-07T14:00:00Z", "2026-03-08T13:00:00Z", "2026-03-09T13:00:00Z"}, utc(got))

	got, err = Next("30 2 * * *", ny, time.Date(2026, 3, 7, 3, 0, 0, 0, ny), 2)
	require.NoError(t, err)
	require.Equal(t, []string{"2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"}, utc(got), "02:30 does not exist on 8 March")

	got, err = Next("30 1 * * *", ny, time.Date(2026, 10, 31, 12, 0, 0, 0, ny), 3)
	require.NoError(t, err)
	require.Equal(t, []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"}, utc(got), "01:30 repeats on 1 November; it runs once")
}

func TestSchedulerSkipsOverlappingPass(t *testing.T) {
	var started, overlapped atomic.Int32
	var running atomic.Bool
	release := make(chan struct{})
	s, err := NewScheduler(context.Background(), time.UTC, slog.New(slog.DiscardHandler),
		map[string][]string{"@every 50ms": {"a", "b"}},
		func(ctx context.Context, segs []string) {
			if !running.CompareAndSwap(false, true) {
				overlapped.Add(1)
			}
			started.Add(1)
			<-release
			running.Store(false)
		})
	require.NoError(t, err)
	s.Start()
	require.Eventually(t, func() bool { return started.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	// Several fires pass while the first pass is held; none may start.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		require.Equal(t, int32(1), started.Load())
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	require.Eventually(t, func() bool { return started.Load() >= 2 }, 10*time.Second, 5*time.Millisecond)
	s.Stop()
	require.Zero(t, overlapped.Load())
}

func TestBadScheduleNamesSegments(t *testing.T) {
	_, err := NewScheduler(context.Background(), time.UTC, slog.New(slog.DiscardHandler),
		map[string][]string{"every tuesday": {"vip", "churn_risk"}}, func(context.Context, []string) {})
	require.ErrorContains(t, err, `schedule "every tuesday" for vip, churn_risk`)
}
