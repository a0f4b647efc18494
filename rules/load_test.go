package rules

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testChannels are the channel instances the golden tests load with.
var testChannels = map[string]string{"email_main": "email", "sms_main": "sms", "hook": "webhook"}

// TestLoadErrorsGolden loads each testdata/errors/<case>/ directory and
// compares the error with <case>/expected.txt (go test -update rewrites).
func TestLoadErrorsGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/errors/*")
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			_, err := LoadDir(dir, LoadOptions{Schema: testSchema, Channels: testChannels})
			require.Error(t, err)
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "") + "\n"
			golden := filepath.Join(dir, "expected.txt")
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			require.Equal(t, string(want), got)
		})
	}
}
