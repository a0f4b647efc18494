//go:build !unix

package sdktest

import "time"

// SelfCPU is the CPU time this process has used so far; zero where the
// platform does not report it.
func SelfCPU() time.Duration { return 0 }
