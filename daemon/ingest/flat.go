package ingest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// prepared is a validated batch ready to commit: its customers already
// encoded as storage rows.
type prepared struct {
	ch     *Changes
	rows   []storage.Customer
	cursor string
}

// flatStream validates the flat batches of one pulled stream. It keeps what
// it learnt about each name of the stream's name table (sdk.FlatBatch.Names),
// so a customer's traits are checked and encoded without a map lookup.
type flatStream struct {
	v     *Validator
	names []flatName
	seen  map[string]struct{}
	order []int
}

// flatName is what a flatStream knows of one trait name.
type flatName struct {
	name  string
	typ   sdk.TraitType
	known bool
	// rank is the name's place in sorted order among the stream's names:
	// traits documents have their keys sorted.
	rank int
	// key is the name as a JSON object key, with its colon.
	key []byte
}

func newFlatStream(v *Validator) *flatStream {
	return &flatStream{v: v, seen: map[string]struct{}{}}
}

// learn takes in names the stream has added since the last batch.
func (s *flatStream) learn(names []string) {
	if len(names) == len(s.names) {
		return
	}
	for _, name := range names[len(s.names):] {
		t, ok := s.v.traits[name]
		s.names = append(s.names, flatName{name: name, typ: t, known: ok, key: append(appendString(nil, name), ':')})
	}
	byName := make([]int, len(s.names))
	for i := range byName {
		byName[i] = i
	}
	slices.SortFunc(byName, func(a, b int) int { return strings.Compare(s.names[a].name, s.names[b].name) })
	for rank, i := range byName {
		s.names[i].rank = rank
	}
}

// prepare validates b as Validator.Batch does and encodes its customers as
// Customers does. The observers' Changes get customers in map form only when
// maps is set. Nothing in the result points into b, which the stream reuses.
func (s *flatStream) prepare(b *sdk.FlatBatch, maps bool) (*prepared, []Problem) {
	v := s.v
	s.learn(b.Names)
	ch := &Changes{Source: v.source, CaughtUp: b.CaughtUp}
	var problems []Problem
	bad := func(kind, id, field, format string, args ...any) {
		problems = append(problems, Problem{Kind: kind, CustomerID: id, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	latest := v.now().Add(v.maxFuture)

	rows := make([]storage.Customer, 0, len(b.Customers))
	if maps {
		ch.Customers = make([]sdk.Customer, 0, len(b.Customers))
	}
	clear(s.seen)
	// One buffer holds every traits document of the batch; ~40 bytes a
	// trait is a fair first guess.
	buf := make([]byte, 0, 40*len(b.Traits)+2*len(b.Customers))
	for i := range b.Customers {
		id := b.Customers[i].ID
		if !checkID(id, s.seen, bad) {
			continue
		}
		traits := b.CustomerTraits(i)
		// The accepted traits, by rank of name (insertion sort: a source
		// usually sends its names in one order, and there are few).
		ord := s.order[:0]
		for j := range traits {
			n := &s.names[traits[j].Name]
			if !checkTrait(id, n.name, n.typ, n.known, &traits[j].Value, latest, bad) {
				continue
			}
			k := len(ord)
			ord = append(ord, j)
			for ; k > 0 && s.names[traits[ord[k-1]].Name].rank > n.rank; k-- {
				ord[k] = ord[k-1]
			}
			ord[k] = j
		}
		s.order = ord
		start := len(buf)
		buf = append(buf, '{')
		for k, j := range ord {
			if k > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, s.names[traits[j].Name].key...)
			buf = appendTrait(buf, &traits[j].Value)
		}
		buf = append(buf, '}')
		rows = append(rows, storage.Customer{ID: id, Traits: buf[start:len(buf):len(buf)]})
		if maps {
			m := make(map[string]sdk.Value, len(ord))
			for _, j := range ord {
				m[s.names[traits[j].Name].name] = traits[j].Value
			}
			ch.Customers = append(ch.Customers, sdk.Customer{ID: id, Traits: m})
		}
	}
	v.rest(ch, b.Deletes, b.Events, b.Consents, bad, latest)
	return &prepared{ch: ch, rows: rows, cursor: b.Cursor}, problems
}

// prepareBatch validates and encodes a batch in map form.
func prepareBatch(v *Validator, b *sdk.Batch) (*prepared, []Problem, error) {
	ch, problems := v.Batch(b)
	ch.CaughtUp = b.CaughtUp
	rows, err := Customers(ch.Customers)
	if err != nil {
		return nil, nil, err
	}
	return &prepared{ch: ch, rows: rows, cursor: b.Cursor}, problems, nil
}
