package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: the config loader never panics, and any error it returns names
// the file. Run: go test ./daemon/config -run '^$' -fuzz FuzzParse -fuzztime 60s
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.yaml")
	seeds = append(seeds, "testdata/good.yaml", "../../config.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("fuzz.yaml", data, func(k string) (string, bool) { return "v", k == "SET" })
		if err != nil && len(err.Error()) < len("fuzz.yaml") {
			t.Fatalf("error without the file name: %v", err)
		}
	})
}
