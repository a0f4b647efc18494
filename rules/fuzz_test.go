package rules

import (
	"os"
	"path/filepath"
	"testing"
)

// Fuzz targets. Run them with, for example:
//
//	go test ./rules -run '^$' -fuzz FuzzLoadYAML -fuzztime 60s
//	go test ./rules -run '^$' -fuzz FuzzCompile -fuzztime 60s
//
// Without -fuzz, go test runs their seed corpus as regular tests.

// FuzzLoadYAML: loading a rules document (or a fixture) never panics.
func FuzzLoadYAML(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	more, _ := filepath.Glob("testdata/*/*/*.yaml")
	for _, name := range append(files, more...) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(corpusDoc())
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := LoadFiles(map[string][]byte{"f.yaml": data}, LoadOptions{Schema: testSchema, Channels: testChannels})
		if err == nil && set == nil {
			t.Fatal("no set and no error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
		_, _ = LoadFixtureFiles(map[string][]byte{"f.yaml": data}, testSchema)
	})
}

// FuzzCompile: compiling any `when` never panics, and when it compiles the
// closures and expr's VM agree on every test profile.
func FuzzCompile(f *testing.F) {
	for _, w := range corpus {
		f.Add(w)
	}
	for _, s := range corpusSegments {
		f.Add(s[1])
	}
	f.Add(`ever("purchse") && age > 3`)
	f.Add(`in_segment("other") || !in_segment("other") && vip`)
	cs := prepareSchema(testSchema)
	tab, err := NewMemTable(testSchema, testCustomers(60, 11))
	if err != nil {
		f.Fatal(err)
	}
	other := NewBitmap(tab.Len())
	for r := 0; r < tab.Len(); r += 3 {
		other.Set(uint32(r))
	}
	env := Env{Now: testNow, Members: map[string]Bitmap{"other": other}}
	rows := make([]uint32, tab.Len())
	for i := range rows {
		rows[i] = uint32(i)
	}
	f.Fuzz(func(t *testing.T, when string) {
		if len(when) > 2000 {
			return
		}
		c := newCompiler(cs, []string{"other"})
		prog, xerr := c.compile(when)
		if xerr != nil {
			e := newCompileError(Pos{File: "f.yaml", Line: 1, Column: 1}, "x", when, xerr)
			if e.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		seg := &Segment{Name: "x", When: when, cs: cs, prog: prog}
		got, err := seg.EvalAll(tab, env)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		b, err := seg.bound(tab)
		if err != nil {
			t.Fatal(err)
		}
		ctx, err := b.newCtx(env)
		if err != nil {
			t.Fatal(err)
		}
		run := ctx.runner()
		for _, r := range rows {
			if !tab.Live().Has(r) {
				continue
			}
			v, err := run.run(prog.vmAll, r)
			if err != nil {
				continue // a runtime error (e.g. int("x")): the VM has no value to compare
			}
			want, _ := v.(bool)
			if got.Has(r) != want {
				t.Fatalf("%q: row %d (%s): closures say %v, expr's VM says %v", when, r, tab.ID(r), got.Has(r), want)
			}
		}
	})
}
