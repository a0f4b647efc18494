package sqlsource

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/cohortd/cohort/sdk"
)

// class is what kind of values a column holds, from its database type.
type class int

const (
	classText    class = iota // text, varchar, char, uuid, enum, anything unknown
	classJSON                 // json, jsonb
	classInt                  // integers, YEAR
	classFloat                // float4/8, FLOAT, DOUBLE
	classDecimal              // numeric, DECIMAL
	classBool                 // bool; MySQL tinyint(1) and bit(1) of a table
	classBit                  // MySQL BIT(n)
	classTime                 // date, timestamp, timestamptz, DATETIME, TIMESTAMP
	classArray                // PostgreSQL arrays
	classSet                  // MySQL SET
	classBinary               // bytea, BLOB, BINARY...
)

// inferred is the trait type a column of class c gets unless the config
// says otherwise; TypeUnknown: not loaded.
func (c class) inferred() sdk.TraitType {
	switch c {
	case classInt, classFloat, classDecimal, classBit:
		return sdk.TypeNumber
	case classBool:
		return sdk.TypeBool
	case classTime:
		return sdk.TypeTime
	case classArray, classSet:
		return sdk.TypeStringList
	case classBinary:
		return sdk.TypeUnknown
	}
	return sdk.TypeString
}

// numeric reports whether values of class c are numbers.
func (c class) numeric() bool {
	return c == classInt || c == classFloat || c == classDecimal
}

// resultColumn is one column of the probe's result.
type resultColumn struct {
	name     string
	typeName string // database/sql DatabaseTypeName, e.g. "INT8", "VARCHAR"
	nullable bool   // true when the driver does not know
}

// column is one column the plugin reads.
type column struct {
	name     string // as the database returns it
	typeName string
	class    class
	nullable bool
	trait    string // "" when the column is not a trait
	typ      sdk.TraitType
	// single is set for single-precision floats (real, FLOAT), which
	// are read through their shortest decimal form.
	single bool
}

// schema is what the plugin reads and sends, learned at Configure.
type schema struct {
	cols    []column // the select list, in the table's order
	id      int      // index in cols
	updated int      // -1 without incremental loading
	deleted int      // -1 without deleted_column
	traits  []sdk.Trait
	contact sdk.ContactFields
	// unloaded are binary columns not read (no type set in columns).
	unloaded []string
}

// buildSchema checks the config's column names against the query's result
// and infers each trait's name and type. Errors are config errors.
func buildSchema(set *settings, d dialect, result []resultColumn, cat map[string]catalogColumn) (*schema, error) {
	what := "the query's result"
	if set.table != nil {
		what = "table " + strings.Join(set.table, ".")
	}
	index := make(map[string]int, len(result))
	for i, rc := range result {
		if j, dup := index[rc.name]; dup {
			return nil, configError(sourceField(set), "columns %d and %d of %s are both named %q; give them different names (AS ...)", j+1, i+1, what, rc.name)
		}
		index[rc.name] = i
	}
	names := make([]string, len(result))
	for i, rc := range result {
		names[i] = rc.name
	}
	// resolve finds a column by its exact name, else by a unique
	// case-insensitive match (MySQL names are case-insensitive; PostgreSQL
	// folds unquoted names to lower case).
	resolve := func(field, name string) (int, error) {
		if i, ok := index[name]; ok {
			return i, nil
		}
		found := -1
		for i, n := range names {
			if strings.EqualFold(n, name) {
				if found >= 0 {
					return 0, configError(field, "%q matches columns %q and %q of %s, which differ only in case; write the name exactly", name, names[found], n, what)
				}
				found = i
			}
		}
		if found < 0 {
			return 0, configError(field, "no column %q in %s; its columns are: %s", name, what, listNames(names))
		}
		return found, nil
	}

	idIdx, err := resolve("id_column", set.id)
	if err != nil {
		return nil, err
	}
	updIdx, delIdx := -1, -1
	if set.updated != "" {
		if updIdx, err = resolve("updated_at_column", set.updated); err != nil {
			return nil, err
		}
	}
	if set.deleted != "" {
		if delIdx, err = resolve("deleted_column", set.deleted); err != nil {
			return nil, err
		}
	}
	overrides := make(map[int]columnConfig, len(set.columns))
	overrideKey := make(map[int]string, len(set.columns))
	for _, key := range sortedKeys(set.columns) {
		i, err := resolve("columns."+key, key)
		if err != nil {
			return nil, err
		}
		if prev, dup := overrideKey[i]; dup {
			return nil, configError("columns."+key, "names the same column as columns.%s; keep one", prev)
		}
		overrides[i], overrideKey[i] = set.columns[key], key
	}
	contactOf := map[int]string{}
	for _, c := range []struct{ key, col string }{{"email", set.email}, {"phone", set.phone}, {"timezone", set.timezone}} {
		if c.col == "" {
			continue
		}
		i, err := resolve(c.key, c.col)
		if err != nil {
			return nil, err
		}
		if prev, dup := contactOf[i]; dup {
			return nil, configError(c.key, "column %q is already the %s column; each contact field needs its own column", result[i].name, prev)
		}
		contactOf[i] = c.key
		if i == delIdx {
			return nil, configError(c.key, "column %q is the deleted_column; name the column holding the %s", result[i].name, c.key)
		}
		if o, ok := overrides[i]; ok {
			if o.Skip {
				return nil, configError(c.key, "column %q is skipped in columns.%s; remove the skip or choose another column", result[i].name, overrideKey[i])
			}
			if o.Type != "" && o.Type != "string" {
				return nil, configError("columns."+overrideKey[i]+".type", "the %s column must be a string; remove the type or set it to string", c.key)
			}
		}
	}
	if o, ok := overrides[delIdx]; ok && !o.Skip && delIdx >= 0 {
		return nil, configError("columns."+overrideKey[delIdx], "column %q is the deleted_column, which is not loaded as a trait; remove this entry", result[delIdx].name)
	}

	sc := &schema{updated: -1, deleted: -1}
	traitOf := map[string]string{} // trait name -> column
	for i, rc := range result {
		cls := d.classOf(rc.typeName, cat[rc.name])
		col := column{name: rc.name, typeName: rc.typeName, class: cls, nullable: rc.nullable,
			single: rc.typeName == "FLOAT4" || rc.typeName == "FLOAT"}
		if c, ok := cat[rc.name]; ok && c.notNull {
			col.nullable = false
		}
		o, hasOverride := overrides[i]
		contact, isContact := contactOf[i]
		control := i == idIdx || i == updIdx || i == delIdx
		isTrait := !o.Skip && i != delIdx && (i != idIdx || isContact || hasOverride)
		if isTrait {
			switch {
			case isContact:
				col.typ = sdk.TypeString
			case o.Type != "":
				col.typ, _ = parseTraitType(o.Type)
			default:
				col.typ = cls.inferred()
			}
			if col.typ == sdk.TypeUnknown {
				sc.unloaded = append(sc.unloaded, rc.name)
				isTrait = false
			}
		}
		if isTrait {
			field := "columns." + rc.name
			if hasOverride {
				field = "columns." + overrideKey[i]
			}
			name := o.Name
			if name == "" {
				name = traitName(rc.name)
				if msg := checkTraitName(name); msg != "" {
					return nil, configError(field, "column %q becomes trait name %q, which %s; set %s.name to a trait name (ASCII letters, digits and _), or %s.skip: true", rc.name, name, msg, field, field)
				}
			}
			if prev, dup := traitOf[name]; dup {
				return nil, configError(field, "columns %q and %q both become trait %q; set %s.name to another name, or %s.skip: true", prev, rc.name, name, field, field)
			}
			traitOf[name] = rc.name
			col.trait = name
			sc.traits = append(sc.traits, sdk.Trait{Name: name, Type: col.typ, Description: fmt.Sprintf("column %s (%s)", rc.name, strings.ToLower(rc.typeName))})
			switch contact {
			case "email":
				sc.contact.Email = name
			case "phone":
				sc.contact.Phone = name
			case "timezone":
				sc.contact.Timezone = name
			}
		}
		if !isTrait && !control {
			continue
		}
		switch i {
		case idIdx:
			sc.id = len(sc.cols)
		case updIdx:
			sc.updated = len(sc.cols)
		case delIdx:
			sc.deleted = len(sc.cols)
		}
		sc.cols = append(sc.cols, col)
	}

	if c := sc.cols[sc.id]; c.class == classBinary || c.class == classArray || c.class == classSet || c.class == classBool {
		return nil, configError("id_column", "column %q is %s; ids must be text or numbers (in query, select a text form of it, e.g. CAST(... AS CHAR))", c.name, article(c.typeName))
	}
	if sc.updated >= 0 {
		c := sc.cols[sc.updated]
		if c.class != classTime && !c.class.numeric() {
			return nil, configError("updated_at_column", "column %q is %s; it must be a date or timestamp column (or a number that grows with every change)", c.name, article(c.typeName))
		}
		if c.class != classTime && set.lagSet && set.lag > 0 {
			return nil, configError("lag", "applies only when updated_at_column is a date or timestamp; %q is %s, so remove lag", c.name, article(c.typeName))
		}
	}
	if sc.deleted >= 0 {
		c := sc.cols[sc.deleted]
		switch c.class {
		case classBool, classBit, classInt, classTime:
		default:
			return nil, configError("deleted_column", "column %q is %s; it must be a boolean (true = deleted), a number (non-zero = deleted) or a nullable timestamp (set = deleted)", c.name, article(c.typeName))
		}
	}
	return sc, nil
}

// sourceField is the config key that holds the SQL: table or query.
func sourceField(set *settings) string {
	if set.table != nil {
		return "table"
	}
	return "query"
}

// article is "a VARCHAR column", "an INT8 column".
func article(typeName string) string {
	t := strings.ToLower(typeName)
	if t == "" {
		return "a column of unknown type"
	}
	if strings.ContainsRune("aeiou", rune(t[0])) {
		return "an " + t + " column"
	}
	return "a " + t + " column"
}

// listNames lists column names for an error message, at most 30.
func listNames(names []string) string {
	const most = 30
	if len(names) > most {
		return strings.Join(names[:most], ", ") + fmt.Sprintf(" and %d more", len(names)-most)
	}
	return strings.Join(names, ", ")
}

// fingerprint identifies what a cursor's position means: which rows, in
// which order, sent as which traits. A cursor made under another
// fingerprint is not resumed; the plugin reads everything again.
func fingerprint(set *settings, sc *schema) string {
	h := sha256.New()
	fmt.Fprintf(h, "%T\x00%q\x00%q\x00%q\x00%d\x00", set.dialect, set.table, set.where, set.query, set.nulls)
	for i, c := range sc.cols {
		role := ""
		switch i {
		case sc.id:
			role = "id"
		case sc.updated:
			role = "updated"
		case sc.deleted:
			role = "deleted"
		}
		fmt.Fprintf(h, "%q\x00%s\x00%q\x00%d\x00", c.name, role, c.trait, c.typ)
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}
