package csvsource

import (
	"hash/maphash"
	"strings"
)

// idSet records the ids of one version of the file and the line of each,
// to find duplicates. It keeps the ids themselves only when they are needed
// later (delete_missing); otherwise it keeps a 128-bit hash of each, which
// holds no pointers, so a million ids cost the garbage collector nothing
// to scan and need no copy of the id. (Two different ids share a hash with
// a probability near n²/2¹²⁹: about 1e-27 for a million ids.)
type idSet struct {
	seed1, seed2 maphash.Seed
	byHash       map[[2]uint64]int32
	byID         map[string]int32
}

func newIDSet(keepIDs bool, hint int) *idSet {
	if keepIDs {
		return &idSet{byID: make(map[string]int32, hint)}
	}
	return &idSet{seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), byHash: make(map[[2]uint64]int32, hint)}
}

// add records id at line, unless it is there already: then it returns the
// line it was first seen on and true.
func (s *idSet) add(id string, line int) (int32, bool) {
	if s.byID != nil {
		if first, dup := s.byID[id]; dup {
			return first, true
		}
		s.byID[strings.Clone(id)] = int32(line)
		return 0, false
	}
	k := [2]uint64{maphash.String(s.seed1, id), maphash.String(s.seed2, id)}
	if first, dup := s.byHash[k]; dup {
		return first, true
	}
	s.byHash[k] = int32(line)
	return 0, false
}
