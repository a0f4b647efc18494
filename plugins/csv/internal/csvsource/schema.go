package csvsource

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cohortd/cohort/sdk"
)

// schema is what Configure learned from the config and the file's header
// and rows. Columns are matched by header name, so a later version of the
// file may reorder them.
type schema struct {
	idColumn string
	// idTrait is the trait the id column also feeds when it is a contact
	// column (e.g. email as the id), else "".
	idTrait     string
	cols        []column // traits, in header order
	consent     string   // consent column header, "" if none
	consentTime string   // consent time column header, "" if none
	traits      []sdk.Trait
	contact     sdk.ContactFields
	rows        int // data rows seen at Configure, a size hint
}

// Inference candidates: a column is a candidate for each type until a cell
// rules it out.
const (
	candNumber uint8 = 1 << iota
	candBool
	candTime
	candAll = candNumber | candBool | candTime
)

func newCSVReader(r io.Reader, delim rune) *csv.Reader {
	cr := csv.NewReader(r)
	cr.Comma = delim
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	return cr
}

// readHeader reads the first record and returns a copy of it with
// surrounding spaces and a UTF-8 byte order mark removed.
func readHeader(cr *csv.Reader) ([]string, error) {
	rec, err := cr.Read()
	if err != nil {
		return nil, err
	}
	h := make([]string, len(rec))
	for i, s := range rec {
		if i == 0 {
			s = strings.TrimPrefix(s, "\uFEFF")
		}
		h[i] = strings.TrimSpace(s)
	}
	return h, nil
}

// headerIndex maps each header to its position, or reports a duplicate.
func headerIndex(header []string) (map[string]int, error) {
	idx := make(map[string]int, len(header))
	for i, h := range header {
		if j, dup := idx[h]; dup {
			return nil, fmt.Errorf("columns %d and %d are both named %q; header names must be unique", j+1, i+1, h)
		}
		idx[h] = i
	}
	return idx, nil
}

// buildSchema reads the header, checks the config against it, and infers
// the type of every column the config does not type, by scanning the whole
// file with cheap checks (a column ruled out of every type is no longer
// checked, and the scan stops when all are).
func buildSchema(ctx context.Context, set *settings) (*schema, error) {
	cfg := set.raw
	f, err := os.Open(set.path)
	if err != nil {
		return nil, configError("path", "cannot read the CSV file: %v (a relative path is relative to the daemon's working directory)", err)
	}
	defer f.Close()
	cr := newCSVReader(f, set.delimiter)
	header, err := readHeader(cr)
	if errors.Is(err, io.EOF) {
		return nil, configError("path", "%s is empty; it needs a header row naming the columns", set.path)
	}
	if err != nil {
		return nil, configError("path", "cannot read the header of %s: %v", set.path, err)
	}
	idx, err := headerIndex(header)
	if err != nil {
		return nil, configError("path", "%s: %v", set.path, err)
	}
	has := func(field, col string) error {
		if _, ok := idx[col]; !ok {
			return configError(field, "column %q is not in the header of %s; the header has: %s", col, set.path, listHeader(header))
		}
		return nil
	}

	sc := &schema{idColumn: cfg.IDColumn}
	if err := has("id_column", cfg.IDColumn); err != nil {
		return nil, err
	}
	// Contact columns are traits of type string.
	contact := map[string]string{} // header -> contact key
	for _, c := range []struct{ key, col string }{{"email", cfg.Email}, {"phone", cfg.Phone}, {"timezone", cfg.Timezone}} {
		if c.col == "" {
			continue
		}
		if err := has(c.key, c.col); err != nil {
			return nil, err
		}
		if prev, dup := contact[c.col]; dup {
			return nil, configError(c.key, "%s and %s both name column %q; each contact field needs its own column", prev, c.key, c.col)
		}
		contact[c.col] = c.key
		cc := cfg.Columns[c.col]
		if cc.Skip {
			return nil, configError("columns."+c.col+".skip", "column %q is the %s contact field and cannot be skipped; remove skip or unset %s", c.col, c.key, c.key)
		}
		if cc.Type != "" && cc.Type != "string" {
			return nil, configError("columns."+c.col+".type", "column %q is the %s contact field, which is a string; remove type: %s", c.col, c.key, cc.Type)
		}
	}
	notTrait := map[string]string{} // header -> why it is not a trait
	if _, isContact := contact[cfg.IDColumn]; !isContact {
		notTrait[cfg.IDColumn] = "the id column"
	}
	if cfg.Consent != nil {
		if err := has("consent.column", cfg.Consent.Column); err != nil {
			return nil, err
		}
		sc.consent = cfg.Consent.Column
		if cfg.Consent.TimeColumn != "" {
			if err := has("consent.time_column", cfg.Consent.TimeColumn); err != nil {
				return nil, err
			}
			sc.consentTime = cfg.Consent.TimeColumn
		}
		for _, c := range []struct{ key, col string }{{"consent.column", sc.consent}, {"consent.time_column", sc.consentTime}} {
			if c.col == "" {
				continue
			}
			if c.col == cfg.IDColumn {
				return nil, configError(c.key, "%q is the id column; name the column holding consent", c.col)
			}
			if key, ok := contact[c.col]; ok {
				return nil, configError(c.key, "%q is the %s contact column; name the column holding consent", c.col, key)
			}
			notTrait[c.col] = "the consent column (" + c.key + ")"
			if c.key == "consent.time_column" {
				notTrait[c.col] = "the consent time column (" + c.key + ")"
			}
		}
	}
	for _, col := range sortedKeys(cfg.Columns) {
		if err := has("columns."+col, col); err != nil {
			return nil, err
		}
		if why, ok := notTrait[col]; ok {
			return nil, configError("columns."+col, "column %q is %s, which is not a trait; remove columns.%s", col, why, col)
		}
	}

	// One trait per remaining column.
	byTrait := map[string]string{} // trait -> header
	var infer []int                // indexes into sc.cols
	colAt := make([]int, len(header))
	for i := range colAt {
		colAt[i] = -1
	}
	for i, h := range header {
		if _, skip := notTrait[h]; skip {
			continue
		}
		cc := cfg.Columns[h]
		if cc.Skip {
			continue
		}
		c := column{header: h, trait: cc.Name, sep: defaultSeparator, format: cc.Format}
		field := "columns." + h
		if c.trait == "" {
			c.trait = traitName(h)
			if msg := checkTraitName(c.trait); msg != "" {
				return nil, configError(field, "column %d (%q) does not make a usable trait name (%q %s); set columns.%s.name to one, or skip: true", i+1, h, c.trait, msg, h)
			}
		}
		if other, dup := byTrait[c.trait]; dup {
			return nil, configError(field, "columns %q and %q both become trait %q; rename one with columns.<header>.name, or drop one with skip: true", other, h, c.trait)
		}
		byTrait[c.trait] = h
		if cc.Separator != nil {
			c.sep = *cc.Separator
		}
		switch {
		case contact[h] != "":
			c.typ = sdk.TypeString
		case cc.Type != "":
			c.typ, _ = parseType(cc.Type)
		default:
			infer = append(infer, len(sc.cols))
		}
		colAt[i] = len(sc.cols)
		sc.cols = append(sc.cols, c)
		if h == cfg.IDColumn {
			sc.idTrait = c.trait
		}
	}

	rows, err := inferTypes(ctx, cr, header, sc.cols, infer, colAt)
	if err != nil {
		return nil, err
	}
	sc.rows = rows

	inferred := make(map[int]bool, len(infer))
	for _, k := range infer {
		inferred[k] = true
	}
	for k, c := range sc.cols {
		how := "configured"
		if inferred[k] {
			how = "inferred"
		}
		sc.traits = append(sc.traits, sdk.Trait{
			Name:        c.trait,
			Type:        c.typ,
			Description: fmt.Sprintf("CSV column %q (%s type)", c.header, how),
		})
		switch contact[c.header] {
		case "email":
			sc.contact.Email = c.trait
		case "phone":
			sc.contact.Phone = c.trait
		case "timezone":
			sc.contact.Timezone = c.trait
		}
	}
	return sc, nil
}

// inferTypes scans the rest of the file and sets the type of the columns
// listed in infer: number if every non-empty cell is a number, else bool
// if every one is true/false, else time if every one is a time in a
// default layout, else string. Empty cells count for nothing, and a column
// with none but empty cells is a string. It returns the number of rows
// read, which is all of them unless every column was ruled out early.
func inferTypes(ctx context.Context, cr *csv.Reader, header []string, cols []column, infer []int, colAt []int) (int, error) {
	type check struct {
		field int // position in the record
		col   int // index into cols
		cand  uint8
		seen  bool
	}
	checks := make([]check, 0, len(infer))
	inferSet := make(map[int]bool, len(infer))
	for _, k := range infer {
		inferSet[k] = true
	}
	for i, k := range colAt {
		if k >= 0 && inferSet[k] {
			checks = append(checks, check{field: i, col: k, cand: candAll})
		}
	}
	live := len(checks) // columns with a candidate left
	rows := 0
	for live > 0 {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				continue // reported when the rows are loaded
			}
			return 0, configError("path", "cannot read the CSV file: %v", err)
		}
		rows++
		if rows&8191 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		if len(rec) != len(header) {
			continue
		}
		for j := range checks {
			ck := &checks[j]
			if ck.cand == 0 {
				continue
			}
			s := strings.TrimSpace(rec[ck.field])
			if s == "" {
				continue
			}
			ck.seen = true
			if ck.cand&candNumber != 0 {
				// A leading + marks a phone number, not an amount.
				if _, ok := parseNumber(s); !ok || s[0] == '+' {
					ck.cand &^= candNumber
				}
			}
			if ck.cand&candBool != 0 && !isTrueFalse(s) {
				ck.cand &^= candBool
			}
			if ck.cand&candTime != 0 {
				if _, ok := parseDefaultTime(s); !ok {
					ck.cand &^= candTime
				}
			}
			if ck.cand == 0 {
				live--
			}
		}
	}
	for _, ck := range checks {
		c := &cols[ck.col]
		switch {
		case !ck.seen || ck.cand == 0:
			c.typ = sdk.TypeString
		case ck.cand&candNumber != 0:
			c.typ = sdk.TypeNumber
		case ck.cand&candBool != 0:
			c.typ = sdk.TypeBool
		default:
			c.typ = sdk.TypeTime
		}
	}
	return rows, nil
}

// listHeader lists header names for an error message.
func listHeader(header []string) string {
	const max = 30
	q := make([]string, 0, min(len(header), max))
	for i, h := range header {
		if i == max {
			q = append(q, fmt.Sprintf("... (%d more)", len(header)-max))
			break
		}
		q = append(q, fmt.Sprintf("%q", h))
	}
	return strings.Join(q, ", ")
}
