package pluginhost

import (
	"os/exec"
	"syscall"
)

// setParentDeath asks the kernel to SIGKILL the plugin when the daemon dies,
// even by SIGKILL, so no plugin outlives it. (The SDK's Serve also exits when
// its parent goes away, for plugins started by other means.) The plugin gets
// its own process group, so a signal sent to the daemon's group (Ctrl-C in a
// terminal) reaches only the daemon, which then stops its plugins in order.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
