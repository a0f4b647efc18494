package campaign

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/rules"
)

// TestBucketReference checks Bucket against values computed outside Go, in a
// shell, as the big-endian uint64 of the first 8 bytes of
// SHA-256(salt ‖ 0x00 ‖ id) modulo 10,000:
//
//	h=$(printf 'winback-2026\0c-0001' | sha256sum | cut -c1-16)  # 7a9037b7af551219
//	python3 -c "print(int('$h', 16) % 10000)"                     # 3497
func TestBucketReference(t *testing.T) {
	for _, c := range []struct {
		salt, id string
		prefix   string // first 16 hex digits of the digest
		want     int
	}{
		{"winback-2026", "c-0001", "7a9037b7af551219", 3497},
		{"winback-2026", "c-0002", "ff9a0e415fb78cec", 2492},
		{"winback", "cust-42", "249208f84f85b49e", 5678},
		{"s", "1", "ed6576411d3bbfd0", 3888},
	} {
		t.Run(c.salt+"/"+c.id, func(t *testing.T) {
			var v uint64
			_, err := fmt.Sscanf(c.prefix, "%x", &v)
			require.NoError(t, err)
			require.Equal(t, c.want, int(v%Buckets), "the reference itself")
			require.Equal(t, c.want, Bucket(c.salt, c.id))
		})
	}
	// The separator matters: "ab"+"c" and "a"+"bc" are different buckets.
	require.NotEqual(t, Bucket("ab", "c"), Bucket("a", "bc"))
}

func testCampaign(holdout int, weights ...int) *rules.Campaign {
	c := &rules.Campaign{Name: "split", Salt: "split-2026", Holdout: holdout}
	for i, w := range weights {
		c.Variants = append(c.Variants, rules.Variant{Name: string(rune('a' + i)), Weight: w})
	}
	return c
}

// within checks a count against its expected share of n to five standard
// deviations of the binomial.
func within(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	require.LessOrEqualf(t, math.Abs(float64(got)-mean), 5*sd+1, "%s: %d of %d, expected %.0f ± %.0f", what, got, n, mean, 5*sd)
}

func TestAssignSplitWithinSamplingBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		holdout int
		weights []int
	}{
		{"10% holdout, 50/50", 1000, []int{50, 50}},
		{"12.5% holdout, 20/30/50", 1250, []int{20, 30, 50}},
		{"no holdout, 70/30", 0, []int{70, 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testCampaign(tc.holdout, tc.weights...)
			const n = 100_000
			counts := map[string]int{}
			rest := Buckets - c.Holdout
			for i := range n {
				id := fmt.Sprintf("cust-%06d", i)
				arm, holdout := Assign(c, id, "")
				counts[arm]++
				b := Bucket(c.Salt, id)
				// Holdout first: buckets [0, H), then variants by
				// cumulative weight over the rest.
				if holdout != (b < c.Holdout) || holdout != (arm == HoldoutArm) {
					t.Fatalf("id %s bucket %d: arm %q, holdout %v with %d holdout buckets", id, b, arm, holdout, c.Holdout)
				}
				if holdout {
					continue
				}
				lo, cum := c.Holdout, 0
				for _, v := range c.Variants {
					hi := c.Holdout + rest*(cum+v.Weight)/100
					if v.Name == arm && (b < lo || b >= hi) {
						t.Fatalf("id %s bucket %d outside %s's range [%d, %d)", id, b, arm, lo, hi)
					}
					cum += v.Weight
					lo = hi
				}
			}
			within(t, "holdout", counts[HoldoutArm], n, float64(c.Holdout)/Buckets)
			for _, v := range c.Variants {
				p := float64(rest) / Buckets * float64(v.Weight) / 100
				within(t, "variant "+v.Name, counts[v.Name], n, p)
			}
		})
	}
}

func TestAssignIsStableAndSalted(t *testing.T) {
	c := testCampaign(1000, 50, 50)
	a1, h1 := Assign(c, "cust-1", "")
	a2, h2 := Assign(c, "cust-1", "")
	require.Equal(t, a1, a2)
	require.Equal(t, h1, h2)

	// Without a salt the campaign name salts the bucket.
	unsalted := testCampaign(1000, 50, 50)
	unsalted.Salt = ""
	for i := range 200 {
		id := fmt.Sprintf("cust-%d", i)
		arm, _ := Assign(unsalted, id, "")
		b := Bucket("split", id)
		if b < 1000 {
			require.Equal(t, HoldoutArm, arm)
		} else if b < 1000+9000/2 {
			require.Equal(t, "a", arm)
		} else {
			require.Equal(t, "b", arm)
		}
	}
}

func TestAssignWinnerKeepsHoldoutShare(t *testing.T) {
	c := testCampaign(1000, 50, 50)
	const n = 100_000
	holdouts := 0
	for i := range n {
		id := fmt.Sprintf("cust-%06d", i)
		before, hBefore := Assign(c, id, "")
		after, hAfter := Assign(c, id, "b")
		// The holdout is the same customers before and after the decision;
		// every other customer gets the winner.
		switch {
		case hBefore != hAfter:
			t.Fatalf("%s: holdout %v before the winner, %v after", id, hBefore, hAfter)
		case hAfter && (after != HoldoutArm || before != HoldoutArm):
			t.Fatalf("%s: holdout with arms %q, %q", id, before, after)
		case hAfter:
			holdouts++
		case after != "b":
			t.Fatalf("%s: arm %q after winner b", id, after)
		}
	}
	within(t, "holdout after the winner", holdouts, n, 0.1)
}

func TestKeyAndHashes(t *testing.T) {
	k := Key("winback", "enter:12", "cust-1", "email_main")
	require.Len(t, k, 32)
	require.Equal(t, k, Key("winback", "enter:12", "cust-1", "email_main"))
	require.NotEqual(t, k, Key("winback", "enter:13", "cust-1", "email_main"))
	// Fields are separated: shifting a boundary changes the key.
	require.NotEqual(t, Key("a", "bc", "d", "e"), Key("ab", "c", "d", "e"))
	require.NotContains(t, k, "cust-1")

	// printf 'address\0ann@example.com' | sha256sum
	require.Equal(t, "e0e448e5d376ac2da64b3d04b5185fa2b4d34df712d12213f7e5b610d66748d5", AddressHash("  Ann@Example.COM "))
	// printf 'customer\0cust-1' | sha256sum
	require.Equal(t, "ec5dca02174efaae3aed08ae5b3d6246e054d6cfb042a0a5201dbfb58bd2b3ec", CustomerHash("cust-1"))
	require.NotEqual(t, AddressHash("ann@example.com"), CustomerHash("ann@example.com"))
}
