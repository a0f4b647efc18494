package sdktest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ChildCPU is the CPU time (user and system) used so far by this process's
// running child processes, such as the plugins LaunchSource and
// LaunchChannel started, read from /proc; zero where /proc cannot be read.
// Benchmarks take it before and after a run to report a plugin process's
// CPU per record or message.
func ChildCPU() time.Duration {
	var total time.Duration
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, pid := range strings.Fields(string(data)) {
			stat, err := os.ReadFile("/proc/" + pid + "/stat")
			if err != nil {
				continue
			}
			// Fields after the command's closing parenthesis: utime and
			// stime are the 12th and 13th, in clock ticks (100 a second).
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(f) < 13 {
				continue
			}
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(u+s) * 10 * time.Millisecond
		}
	}
	return total
}
