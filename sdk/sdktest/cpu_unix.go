//go:build unix

package sdktest

import (
	"syscall"
	"time"
)

// SelfCPU is the CPU time (user and system) this process has used so far.
// Benchmarks take it before and after a run, beside ChildCPU, to report
// the CPU a record or message costs in the host's process.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
