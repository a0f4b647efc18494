package campaign

import (
	"testing"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
)

var traitTypes = map[string]sdk.TraitType{
	"email": sdk.TypeString, "n": sdk.TypeNumber, "vip": sdk.TypeBool, "seen": sdk.TypeTime, "tags": sdk.TypeStringList,
}

var traitDocs = []string{
	`{}`, ` { } `, `{"email":"ann@example.com","n":3,"vip":true}`,
	`{"email": "ann@example.com", "n": -0.5e3, "vip": false, "seen": "2026-11-24T15:00:00Z"}`,
	`{"email":"a\"b@example.com"}`, `{"email":"caf\u00e9@example.com"}`, `{"email":"café@example.com"}`,
	"{\"email\":\"\xff@example.com\"}", "{\"email\":\"a\tb\"}", `{"tags":["a","b"],"email":"x@example.com"}`,
	`{"other":{"a":[1,2]},"email":"x@example.com"}`, `{"email":null}`, `{"email":1}`, `{"n":"1"}`, `{"vip":"true"}`,
	`{"seen":"yesterday"}`, `{"seen":"2026-11-24T15:00:00+01:00"}`, `{"n":01}`, `{"n":1.}`, `{"n":1e}`, `{"n":1e400}`,
	`{"n":-}`, `{"n":0.25}`, `{"n":1E+2}`, `{"email":"a","email":"b"}`, `{"email":"a","email":null}`, `{"email":"a","email":2}`,
	`{"email":"a",}`, `{"email":"a"} x`, `{"email":"a"`, `[]`, `null`, ``, `{"email" "a"}`, `{"unknown":true,"n":2}`,
	`{"vip":tru}`, `{"vip":nul}`, "{\"email\":\"a\"}\n", `{"email":"a"}}`,
}

// TestStoredTraitsMatchesIngest: the dispatcher's reading of stored traits
// is the ingest package's, document by document.
func TestStoredTraitsMatchesIngest(t *testing.T) {
	for _, doc := range traitDocs {
		checkStoredTraits(t, doc)
	}
}

func FuzzStoredTraits(f *testing.F) {
	for _, doc := range traitDocs {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc string) { checkStoredTraits(t, doc) })
}

func checkStoredTraits(t *testing.T, doc string) {
	t.Helper()
	want, _, wantErr := ingest.TraitsFromJSON([]byte(doc), traitTypes)
	got, err := storedTraits([]byte(doc), traitTypes)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, ingest's %v", doc, err, wantErr)
	}
	if len(got) != len(want) {
		t.Fatalf("%q: %v, ingest reads %v", doc, got, want)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.Type != w.Type || g.Str != w.Str || g.Num != w.Num || g.Bool != w.Bool || !g.Time.Equal(w.Time) ||
			g.Time.Format(timeLayout) != w.Time.Format(timeLayout) || len(g.List) != len(w.List) {
			t.Fatalf("%q: %s = %+v, ingest reads %+v", doc, k, g, w)
		}
		for i := range w.List {
			if g.List[i] != w.List[i] {
				t.Fatalf("%q: %s = %+v, ingest reads %+v", doc, k, g, w)
			}
		}
	}
}

const timeLayout = "2006-01-02T15:04:05.999999999Z07:00"
