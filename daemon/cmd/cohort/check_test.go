package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/sdk/sdktest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestCheckGolden: `cohort check` on each testdata/check/CASE gives exactly
// CASE/expected.golden (stdout and stderr, with the case's directory written
// as $CASE) and the exit status on its first line. The cases run the real
// csv plugin for the sources' schema and the file plugin for channels. The
// campaign cases cover template errors at file:line:col, templates that do
// not render for a fixture customer, and fixture campaign expectations
// (arm and outcome) that hold or fail.
func TestCheckGolden(t *testing.T) {
	plugins := t.TempDir()
	for _, name := range []string{"csv", "file"} {
		bin := sdktest.BuildPlugin(t, "github.com/cohortd/cohort/plugins/"+name)
		require.NoError(t, os.Symlink(bin, filepath.Join(plugins, name)))
	}
	t.Setenv("COHORT_TEST_PLUGINS", plugins)
	t.Setenv("COHORT_TEST_VAR", t.TempDir())
	cases, err := filepath.Glob("testdata/check/*/config.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	for _, cfg := range cases {
		dir := filepath.Dir(cfg)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			code, out, errOut := runCLI(t, "check", "--config", cfg)
			abs, _ := filepath.Abs(dir)
			got := strings.NewReplacer(abs, "$CASE", dir, "$CASE").Replace(
				"exit " + string(rune('0'+code)) + "\n" + out + errOut)
			golden := filepath.Join(dir, "expected.golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./daemon/cmd/cohort -run CheckGolden -update")
			require.Equal(t, string(want), got)
		})
	}
}
