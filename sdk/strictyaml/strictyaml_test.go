package strictyaml

import (
	"errors"
	"testing"
)

func TestUnknownKeyError(t *testing.T) {
	type inner struct {
		PublicURL string `yaml:"public_url"`
	}
	var cfg struct {
		HTTP inner `yaml:"http"`
	}
	for _, tc := range []struct {
		name, data, key, text string
	}{
		{"top level", "htp: {}\n", "htp",
			`f.yaml:1:1: unknown key "htp" at the top level (known keys: http); did you mean "http"?`},
		{"nested", "http:\n  public_ulr: x\n", "http.public_ulr",
			`f.yaml:2:3: unknown key "public_ulr" in http (known keys: public_url); did you mean "public_url"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Decode("f.yaml", []byte(tc.data), &cfg, Options{})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode = %v, want an *Error", err)
			}
			if e.Key != tc.key || e.Path != "" || err.Error() != tc.text {
				t.Errorf("got Key %q, Path %q, text %q\nwant Key %q, Path \"\", text %q", e.Key, e.Path, err, tc.key, tc.text)
			}
		})
	}
}
