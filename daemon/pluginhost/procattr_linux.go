package pluginhost

import (
	"os/exec"
	"syscall"
)

// setParentDeath asks the kernel to SIGKILL the plugin when the daemon dies,
// even by SIGKILL, so no plugin outlives it. (The SDK's Serve also exits when
// its parent goes away, for plugins started by other means.)
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
