package segment

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Scheduler runs full segmentation passes on cron schedules in the
// configured time zone: one job per distinct schedule (the global refresh,
// and each per-segment override), each running a pass over the segments on
// that schedule. A pass still running when its next fire comes is skipped,
// not stacked; a missed fire (daemon down) is not replayed.
type Scheduler struct {
	c   *cron.Cron
	log *slog.Logger
	wg  sync.WaitGroup
}

// PassFunc runs a full pass over the named segments.
type PassFunc func(ctx context.Context, segments []string)

// NewScheduler schedules run for each schedule in bySchedule (cron spec →
// segment names), in loc.
func NewScheduler(ctx context.Context, loc *time.Location, log *slog.Logger, bySchedule map[string][]string, run PassFunc) (*Scheduler, error) {
	cl := cronLogger{log}
	c := cron.New(cron.WithLocation(loc), cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)), cron.WithLogger(cl))
	s := &Scheduler{c: c, log: log}
	specs := make([]string, 0, len(bySchedule))
	for spec := range bySchedule {
		specs = append(specs, spec)
	}
	sort.Strings(specs)
	for _, spec := range specs {
		segs := bySchedule[spec]
		sched, err := Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("schedule %q for %s: %w", spec, strings.Join(segs, ", "), err)
		}
		c.Schedule(sched, cron.FuncJob(func() {
			s.wg.Add(1)
			defer s.wg.Done()
			if ctx.Err() == nil {
				run(ctx, segs)
			}
		}))
	}
	return s, nil
}

// Parse parses a standard 5-field cron spec (or a descriptor such as
// @hourly). The schedule runs once per local wall-clock time: in the hour
// that repeats when clocks fall back, a time that already fired is skipped
// (robfig/cron alone would fire it twice, which for a broadcast campaign
// means two sends).
func Parse(spec string) (cron.Schedule, error) {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, err
	}
	return onceper{sched}, nil
}

type onceper struct{ cron.Schedule }

func (o onceper) Next(t time.Time) time.Time {
	n := o.Schedule.Next(t)
	const wall = "2006-01-02 15:04"
	if !n.IsZero() && n.Format(wall) == t.Format(wall) && n.Sub(t) < 2*time.Hour {
		return o.Schedule.Next(n)
	}
	return n
}

// Start starts the schedules.
func (s *Scheduler) Start() { s.c.Start() }

// Stop stops scheduling and waits for a running pass to finish.
func (s *Scheduler) Stop() {
	<-s.c.Stop().Done()
	s.wg.Wait()
}

// Next returns the next fire times of the schedules after t (for tests and
// operator tools).
func Next(spec string, loc *time.Location, after time.Time, n int) ([]time.Time, error) {
	sched, err := Parse(spec)
	if err != nil {
		return nil, err
	}
	out := make([]time.Time, 0, n)
	t := after.In(loc)
	for range n {
		t = sched.Next(t)
		out = append(out, t)
	}
	return out, nil
}

type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) {
	if msg == "skip" {
		l.log.Warn("segmentation pass skipped: the previous one is still running", kv...)
		return
	}
	l.log.Debug("cron: "+msg, kv...)
}

func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
