package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// verifyBinary checks the plugin binary exists, is a regular executable file
// that is not world-writable, and, when pinned, has the expected SHA-256. It
// hashes the file afresh on every call and returns the hex digest.
func verifyBinary(path, pinned string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("plugin binary %s not found; run `make build`, or fix the instance's plugin setting", path)
		}
		return "", fmt.Errorf("plugin binary %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("plugin binary %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return "", fmt.Errorf("plugin binary %s is world-writable (mode %s), so anyone could replace it; refusing to run it: chmod o-w %s", path, fi.Mode().Perm(), path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("plugin binary %s is not executable: chmod +x %s", path, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("plugin binary %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("plugin binary %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if pinned != "" && !strings.EqualFold(sum, pinned) {
		return sum, &permanentError{fmt.Errorf("plugin binary %s has sha256 %s but the config pins %s; refusing to run it (if the new binary is trusted, update sha256)", path, sum, strings.ToLower(pinned))}
	}
	return sum, nil
}

// permanentError marks a failure that retrying cannot fix (bad checksum,
// invalid config): the instance stays failed until the daemon is restarted
// with a fixed configuration.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe)
}
