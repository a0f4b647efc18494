package stats_test

import (
	"fmt"

	"github.com/cohortd/cohort/daemon/campaign/stats"
)

func ExampleDecide() {
	rule := stats.WinnerRule{MinPerArm: 1000, Alpha: 0.05, Tau: 0.02}
	var state stats.State // persisted by the caller between looks

	arms := []stats.Arm{
		{Name: "holdout", Kind: stats.Holdout, Assigned: 400, Matured: 400, Converted: 36},
		{Name: "short", Kind: stats.Variant, Assigned: 2100, Matured: 2000, Converted: 300},
		{Name: "long", Kind: stats.Variant, Assigned: 2100, Matured: 2000, Converted: 200},
	}
	d, state := stats.Decide(arms, rule, state)
	fmt.Println(d.Verdict, d.Winner)
	fmt.Printf("%s vs %s: p %.2g\n", d.Pairs[0].A, d.Pairs[0].B, d.Pairs[0].P)

	lift := stats.Lift(300, 2000, 36, 400, 0.95)
	fmt.Printf("lift of short over holdout: %+.3f (%+.3f to %+.3f), relative %+.0f%%\n",
		lift.Diff, lift.DiffLo, lift.DiffHi, 100*lift.Relative)
	_ = state
	// Output:
	// winner short
	// long vs short: p 0.00026
	// lift of short over holdout: +0.060 (+0.025 to +0.089), relative +67%
}
