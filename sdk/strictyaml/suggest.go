package strictyaml

// Closest returns the candidate within a small edit distance of s (at most
// 2), for "did you mean" hints; "" if none is close.
func Closest(s string, candidates []string) string { return closest(s, candidates) }
