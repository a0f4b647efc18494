//go:build !linux

package pluginhost

import "os/exec"

// setParentDeath is Linux-only; elsewhere the SDK's parent watch ends plugins.
func setParentDeath(*exec.Cmd) {}
