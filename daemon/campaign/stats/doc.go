// Package stats holds the statistics behind campaign results (DESIGN.md section 5,
// "Results"): per-arm rate intervals, lift over the holdout, always-valid p-values for
// comparing variants while results are watched continuously, Holm's multiple-comparison
// correction, the sample-ratio-mismatch check and the winner decision built from them.
//
// Every function is pure, uses only the standard library and never panics: degenerate
// inputs (n = 0, negative counts, more successes than trials, NaN or out-of-range
// parameters) give documented, NaN-free answers. Counts are clamped first: a negative n
// is 0 and successes are clamped into [0, n].
//
// # Rates and intervals
//
// [Wilson] is the Wilson score interval for one proportion (E. B. Wilson, "Probable
// inference, the law of succession, and statistical inference", JASA 22:209-212, 1927),
// without continuity correction. It is "method 3" of R. G. Newcombe, "Two-sided confidence
// intervals for the single proportion: comparison of seven methods", Statistics in
// Medicine 17:857-872 (1998), which recommends it over the Wald interval: it stays inside
// [0, 1], is never zero-width, and keeps close to nominal coverage near 0 and 1 where
// campaign conversion rates live. With n = 0 it returns (0, 1): no information.
//
// [Lift] is a variant's rate minus the holdout's with the interval of R. G. Newcombe,
// "Interval estimation for the difference between independent proportions: comparison of
// eleven methods", Statistics in Medicine 17:873-890 (1998), method 10 (the "hybrid score"
// interval built from the two Wilson intervals). The relative lift is the difference
// divided by the holdout rate, reported only when the holdout rate is above zero; no
// interval is given for it (dividing the difference's limits by an estimated rate would
// ignore the holdout's own uncertainty). Lift assumes the two arms are independent
// samples, which hash-based assignment (DESIGN.md section 5) gives.
//
// # Always-valid p-values
//
// [MSPRTPValue] is the two-sided p-value of the mixture sequential probability ratio test
// (mSPRT) of R. Johari, P. Koomen, L. Pekelis and D. Walsh, "Always valid inference:
// continuous monitoring of A/B tests", Operations Research 70(3):1806-1821 (2022; first
// circulated as arXiv:1512.04922), in the normal-mixture form (their section 4) applied to
// the difference of two conversion rates. For arms with x1 of n1 and x2 of n2 converted, p1 = x1/n1, p2 = x2/n2:
//
//	theta = p1 - p2
//	V     = p1(1-p1)/n1 + p2(1-p2)/n2
//	Lambda = sqrt(V/(V+tau^2)) * exp(theta^2 tau^2 / (2 V (V+tau^2)))
//	p     = min(1, 1/Lambda)
//
// Lambda is the likelihood ratio of theta ~ N(theta, V) averaged over the alternative
// theta ~ N(0, tau^2) against theta = 0. tau is the mixing scale: the size of effect the
// test is most sensitive to (DESIGN.md default 0.02, two percentage points). Assumptions:
// V is the plug-in (unpooled) variance and theta is treated as normal, so the guarantee is
// asymptotic; counts must be cumulative over the looks of one experiment. Zero variance
// guard: when both arms are all-0 or all-1, V would be 0; V is therefore floored at the
// variance of the pooled rate had half a conversion more (or fewer) been seen,
// f(1-f)(1/n1+1/n2) with f = 0.5/(n1+n2), which is at most 1/(2 n1 n2). When both arms
// have at least one conversion and one non-conversion, p(1-p)/n >= 1/(2n^2) per arm, so
// V >= 1/(2n1^2) + 1/(2n2^2) >= 1/(n1 n2) and the floor never acts. It acts only when an
// arm is all-0 or all-1 and the other arm's variance is small, exactly where the plug-in
// variance understates the all-0 arm's uncertainty; it keeps p finite there. One arm with
// n = 0 gives p = 1.
//
// An always-valid p-value is the running minimum over looks, p_n = min(p_{n-1}, 1/Lambda_n):
// at any data-dependent stopping time P(p_n <= alpha) <= alpha under the null, so results
// can be watched after every batch without inflating false positives, unlike a
// fixed-horizon z-test checked repeatedly. [Sequential] keeps that minimum; it is a small
// JSON-serializable value the daemon persists. [RunningPValue] is the same as a function of
// the previous p.
//
// # Multiple comparisons
//
// [Holm] is the step-down procedure of S. Holm, "A simple sequentially rejective multiple
// test procedure", Scandinavian Journal of Statistics 6(2):65-70 (1979). It controls the
// family-wise error rate at alpha under any dependence between the tests, so it is valid
// for the pairwise comparisons of variants that share arms. Adjusted p-values are
// min(1, max_{j<=i} (m-j+1) p_(j)), as in R's p.adjust(method = "holm"); hypothesis i is
// rejected when its adjusted p-value is at most alpha.
//
// # Sample-ratio mismatch
//
// [SRM] is Pearson's chi-square goodness-of-fit test of the observed arm sizes against the
// configured weights, with k-1 degrees of freedom (k arms with positive weight). A small
// p-value (DESIGN.md: p < 0.001) means assignment or logging is broken and the experiment's
// results must not be trusted (R. Kohavi, D. Tang, Y. Xu, "Trustworthy Online Controlled
// Experiments", Cambridge University Press 2020, chapter 21). The chi-square survival
// function is the regularized upper incomplete gamma function Q(df/2, chi2/2)
// ([ChiSquareSurvival], [GammaQ]), computed by its series for x < a+1 and by its continued
// fraction (modified Lentz) otherwise, as in W. H. Press et al., "Numerical Recipes",
// 3rd ed., section 6.2 (gser/gcf), to about 1e-14 relative accuracy.
//
// # Winner decision
//
// [Decide] compares every pair of variants (never the holdout) with always-valid mSPRT
// p-values, keeps each pair's running minimum in [State], corrects across the pairs with
// Holm at alpha, and declares a variant the winner when it beats every other variant
// significantly and has the higher rate in each of those comparisons. Because a running
// minimum never forgets, each pair also keeps the minimum separately for the looks at
// which either variant led, and a variant only wins a pair on evidence gathered while it
// led: if the rates cross after a pair became significant, neither variant wins that pair
// until the new leader earns its own evidence. Each directional minimum runs over a subset
// of the looks, so it is valid whenever the two-sided one is. Nothing is tested,
// and the state is not advanced, until every variant has at least min_per_arm matured
// members: the normal approximation behind the mSPRT is poor on a handful of members,
// and starting the running minimum late keeps it valid (the mSPRT bound holds for the
// supremum over all sample sizes, so over any later subset too). The counts passed in are
// whichever metric the campaign's winner is judged on (conversion, click or open) among
// matured members.
package stats
