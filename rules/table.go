package rules

import (
	"math/bits"
	"time"
)

// Table is what compiled rules read: typed columns, one row per customer.
// The profile store (daemon/profile) implements it; NewMemTable builds a
// small one for fixtures and tests.
//
// Columns are handed out once per binding, not per row: a compiled rule keeps
// the slices it was given and indexes them directly. The contract is:
//
//   - every column covers rows [0, Len()): slices have at least Len()
//     elements and bitmaps at least (Len()+63)/64 words;
//   - nothing the Table handed out changes while it is being read, except
//     values a writer updates in place under the same synchronisation that
//     guards the read (the profile store reads under its read lock);
//   - Generation changes whenever a slice may have been reallocated, a
//     dictionary has grown or Len has changed, so a rule binding made for an
//     older generation is rebuilt (see Segment.EvalAll).
type Table interface {
	// Len is the number of rows, tombstoned ones included.
	Len() int
	// Generation identifies the layout of the columns handed out.
	Generation() uint64
	// Live has a bit set for every row that is evaluated (not tombstoned).
	Live() Bitmap
	// Number, String, Bool, Time and List return the column of a trait of
	// that type; false if the table has no such column.
	Number(name string) (NumberColumn, bool)
	String(name string) (StringColumn, bool)
	Bool(name string) (BoolColumn, bool)
	Time(name string) (TimeColumn, bool)
	List(name string) (ListColumn, bool)
	// Events returns the daily rollups of an event name; false if the
	// table has never seen that event (no customer has it).
	Events(name string) (EventColumn, bool)
	// RFM returns the RFM quintiles of the last full pass; false if none
	// has been computed.
	RFM() (RFMColumns, bool)
}

// NumberColumn holds a number trait: Values[row] is meaningful only where
// Present has the row's bit set.
type NumberColumn struct {
	Values  []float64
	Present Bitmap
}

// BoolColumn holds a bool trait as two bitmaps.
type BoolColumn struct {
	Values  Bitmap
	Present Bitmap
}

// TimeColumn holds a time trait as UTC days since 1970-01-01 (negative
// before). Rules see times with day resolution.
type TimeColumn struct {
	Days    []int32
	Present Bitmap
}

// StringColumn holds a string trait as dictionary codes. Code 0 means
// missing; Dict[code] is the value for codes > 0 (Dict[0] is unused). The
// dictionary only grows: a code never changes its string.
type StringColumn struct {
	Codes []uint32
	Dict  []string
}

// ListColumn holds a list-of-strings trait: the row's items are the codes
// Codes[Start[row] : Start[row]+N[row]], decoded with Dict (Dict[0] unused).
// Present distinguishes an empty list from a missing one.
type ListColumn struct {
	Start   []uint32
	N       []uint16
	Codes   []uint32
	Dict    []string
	Present Bitmap
}

// OverflowCount marks a daily count too large for uint16: the real count is
// in EventColumn.Overflow.
const OverflowCount = 0xFFFF

// EventColumn holds one event name's daily rollups. A row's rollups are
// entries Start[row] .. Start[row]+N[row]-1, sorted by day, no day twice.
// Days are UTC days since 1970-01-01 (1..65535, 0 is "none").
type EventColumn struct {
	Start []uint32
	N     []uint16
	// First and Last are the days of the row's first and last event (0 if
	// the row has none). They outlive rollups dropped by a retention.
	First []uint16
	Last  []uint16

	Days   []uint16
	Counts []uint16
	// Sums holds the day's sum of event values, parallel to Days; nil when
	// no event of this name ever carried a value (every sum is 0).
	Sums []float64
	// Overflow holds the count of an entry whose Counts value is
	// OverflowCount, keyed by OverflowKey(row, day).
	Overflow map[uint64]uint32
}

// OverflowKey is the key of EventColumn.Overflow.
func OverflowKey(row uint32, day uint16) uint64 { return uint64(row)<<16 | uint64(day) }

// RFMColumns holds RFM quintiles per row: 1 (worst) to 5 (best), 0 where
// missing (the customer never had the RFM event).
type RFMColumns struct {
	R, F, M []uint8
}

// Bitmap is a set of rows.
type Bitmap []uint64

// NewBitmap returns an empty bitmap for n rows.
func NewBitmap(n int) Bitmap { return make(Bitmap, (n+63)/64) }

// Has reports whether row is in the set.
func (b Bitmap) Has(row uint32) bool {
	w := row >> 6
	return int(w) < len(b) && b[w]&(1<<(row&63)) != 0
}

// Set adds row; the bitmap must be large enough.
func (b Bitmap) Set(row uint32) { b[row>>6] |= 1 << (row & 63) }

// Clear removes row if the bitmap covers it.
func (b Bitmap) Clear(row uint32) {
	if w := row >> 6; int(w) < len(b) {
		b[w] &^= 1 << (row & 63)
	}
}

// Count is the number of rows in the set.
func (b Bitmap) Count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// Rows appends the rows in the set, ascending, to dst.
func (b Bitmap) Rows(dst []uint32) []uint32 {
	for i, w := range b {
		for w != 0 {
			dst = append(dst, uint32(i*64+bits.TrailingZeros64(w)))
			w &= w - 1
		}
	}
	return dst
}

// Equal reports whether a and b hold the same rows.
func (b Bitmap) Equal(o Bitmap) bool {
	n := max(len(b), len(o))
	for i := range n {
		var x, y uint64
		if i < len(b) {
			x = b[i]
		}
		if i < len(o) {
			y = o[i]
		}
		if x != y {
			return false
		}
	}
	return true
}

// Day is the UTC day number of t: days since 1970-01-01, negative before.
func Day(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d--
	}
	return d
}

// DayTime is the UTC midnight starting day d.
func DayTime(d int64) time.Time { return time.Unix(d*86400, 0).UTC() }
