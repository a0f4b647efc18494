package rules

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDifferential runs every corpus rule on every test profile through the
// closures (whole-table and row-set evaluation) and through expr's VM, and
// requires identical results.
func TestDifferential(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"corpus.yaml": corpusDoc()}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	require.Len(t, set.Segments(), len(corpus)+len(corpusSegments))
	both := 0
	for _, seed := range []uint64{1, 2, 3} {
		tab, err := NewMemTable(testSchema, testCustomers(700, seed))
		require.NoError(t, err)
		members, err := set.EvalAll(tab, testNow)
		require.NoError(t, err)
		n := tab.Len()
		rows := make([]uint32, n)
		for i := range rows {
			rows[i] = uint32(i)
		}
		r := rand.New(rand.NewPCG(seed, 99))
		for _, s := range set.Segments() {
			env := Env{Now: testNow, Members: members}
			vm := make([]bool, n)
			require.NoError(t, s.EvalVM(tab, env, rows, vm), s.When)
			in, out := 0, 0
			for i, row := range rows {
				require.Equalf(t, vm[i], members[s.Name].Has(row), "rule %s: %s\nrow %d (%s)", s.Name, s.When, row, tab.ID(row))
				if vm[i] {
					in++
				} else if tab.Live().Has(row) {
					out++
				}
			}
			if in > 0 && out > 0 {
				both++
			}
			// Row sets in any order, with duplicates and out-of-range rows.
			sub := make([]uint32, 300)
			for i := range sub {
				sub[i] = uint32(r.IntN(n + 5))
			}
			got := make([]bool, len(sub))
			require.NoError(t, s.Eval(tab, env, sub, got))
			for i, row := range sub {
				want := int(row) < n && vm[row]
				require.Equalf(t, want, got[i], "rule %s: %s: Eval row %d", s.Name, s.When, row)
			}
		}
	}
	// The comparison means something only where rules split the profiles.
	require.Greater(t, both, 3*len(set.Segments())*8/10, "most corpus rules must have members and non-members")
}

// TestCorpusUsesBothPaths checks the corpus exercises the closures and the
// VM fallback inside them.
func TestCorpusUsesBothPaths(t *testing.T) {
	set, err := LoadFiles(map[string][]byte{"corpus.yaml": corpusDoc()}, LoadOptions{Schema: testSchema})
	require.NoError(t, err)
	native, fallback, mixed := 0, 0, 0
	for _, s := range set.Segments() {
		vm, closures := planUses(s.prog.plan)
		switch {
		case vm && closures:
			mixed++
		case vm:
			fallback++
		default:
			native++
		}
	}
	t.Logf("native %d, fallback %d, mixed %d", native, fallback, mixed)
	require.Greater(t, native, 100)
	require.Greater(t, fallback, 10)
	require.Greater(t, mixed, 5)
}

// planUses reports whether a plan uses expr's VM and closures.
func planUses(p any) (vm, closures bool) {
	switch x := p.(type) {
	case *pVM, *nVM:
		return true, false
	case *pAnd:
		return usesAll(x.kids)
	case *pStrTables:
		return false, true
	case *pOr:
		return usesAll(x.kids)
	case *pNot:
		return planUses(x.kid)
	case *pTernary:
		return usesAll([]bplan{x.c, x.a, x.b})
	case *pNumCmp:
		a, b := planUses(x.l)
		c, d := planUses(x.r)
		return a || c, true || b || d
	case *nArith:
		a, b := planUses(x.l)
		c, d := planUses(x.r)
		return a || c, b || d || true
	}
	return false, true
}

func usesAll(ps []bplan) (vm, closures bool) {
	for _, p := range ps {
		a, b := planUses(p)
		vm, closures = vm || a, closures || b
	}
	return vm, closures
}
