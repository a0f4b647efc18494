package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestBadConfigs: every testdata/bad/NAME.yaml fails with exactly the message
// in testdata/bad/NAME.golden.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			_, err = Parse(f, data, env(nil))
			require.Error(t, err, "config %s must be rejected", f)
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644))
			}
			want, rerr := os.ReadFile(golden)
			require.NoError(t, rerr, "missing golden file; run go test ./daemon/config -update")
			require.Equal(t, strings.TrimSuffix(string(want), "\n"), err.Error())
		})
	}
}

func TestGoodConfig(t *testing.T) {
	f := "testdata/good.yaml"
	data, err := os.ReadFile(f)
	require.NoError(t, err)
	c, err := Parse(f, data, env(map[string]string{"CRM_TOKEN": "tok-123"}))
	require.NoError(t, err)
	dir, _ := filepath.Abs("testdata")

	require.Equal(t, "sqlite", c.Storage.Driver)
	require.Equal(t, filepath.Join(dir, "data/test.db"), c.SQLitePath())
	require.Equal(t, "https://cohort.example.com", c.HTTP.PublicURL, "trailing slash trimmed")
	require.Equal(t, "Europe/Berlin", c.Location.String())
	require.Equal(t, 30*time.Second, c.HTTP.ShutdownTimeout)
	require.Equal(t, filepath.Join(dir, "rules"), c.Path(c.Rules.Dir))

	crm := c.Sources.ByName["crm"]
	require.NotNil(t, crm)
	require.Equal(t, filepath.Join(dir, "bin/plugins/csv"), c.PluginPath(crm))
	require.True(t, crm.AutoMTLSEnabled())
	require.Equal(t, 30*time.Second, crm.Timeout)
	require.Equal(t, "report", crm.OnUnknown)
	require.Equal(t, "path: customers.csv\ntoken: \"tok-123\"\nprice: \"$5\"\n", string(crm.ConfigYAML()))
	require.Equal(t, 8, crm.Line)

	em := c.Channels.ByName["email_main"]
	require.Equal(t, filepath.Join(dir, "custom/file"), c.PluginPath(em))
	require.False(t, em.AutoMTLSEnabled())
	require.Equal(t, 12.5, em.Rate)
	require.Equal(t, 2*time.Second, em.Timeout)
	require.Equal(t, 4, em.Concurrency)
	require.Equal(t, "resend", em.OnUnknown)
	require.Nil(t, em.ConfigYAML())
	require.Equal(t, []string{"crm", "email_main"}, c.InstanceNames())
}

func TestDefaults(t *testing.T) {
	c, err := Parse("empty.yaml", nil, env(nil))
	require.NoError(t, err)
	require.Equal(t, "sqlite", c.Storage.Driver)
	require.Equal(t, "var/cohort.db", c.Storage.DSN)
	require.Equal(t, "127.0.0.1:8080", c.HTTP.Listen)
	require.Equal(t, "http://127.0.0.1:8080", c.HTTP.PublicURL)
	require.Equal(t, "UTC", c.Timezone)
	require.Equal(t, "auto", c.Log.Format)
	require.Equal(t, "info", c.Log.Level)
}

func TestRepositoryConfigIsValid(t *testing.T) {
	c, err := Load("../../config.yaml")
	require.NoError(t, err)
	require.Contains(t, c.Sources.ByName, "crm")
	require.Contains(t, c.Channels.ByName, "email_main")
}
