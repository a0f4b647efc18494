package ingest

import (
	"fmt"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// Problem is one bad record or field that ingestion skipped.
type Problem struct {
	// Kind is a short metric label: wrong_type, unknown_trait, duplicate_id,
	// absurd_time, missing_id, bad_consent.
	Kind       string
	CustomerID string
	Field      string
	Message    string
}

// earliest is the earliest event or consent time accepted.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Validator checks batches from one source against the schema it declared.
type Validator struct {
	source    string
	traits    map[string]sdk.TraitType
	now       func() time.Time
	maxFuture time.Duration
}

// NewValidator returns a validator for a source and its Configure info.
func NewValidator(source string, info sdk.SourceInfo, now func() time.Time, maxFuture time.Duration) *Validator {
	traits := make(map[string]sdk.TraitType, len(info.Traits))
	for _, t := range info.Traits {
		traits[t.Name] = t.Type
	}
	return &Validator{source: source, traits: traits, now: now, maxFuture: maxFuture}
}

// Batch returns the valid part of b as Changes, and the problems it skipped.
func (v *Validator) Batch(b *sdk.Batch) (*Changes, []Problem) {
	ch := &Changes{Source: v.source}
	var problems []Problem
	bad := func(kind, id, field, format string, args ...any) {
		problems = append(problems, Problem{Kind: kind, CustomerID: id, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	now := v.now()
	latest := now.Add(v.maxFuture)

	seen := make(map[string]struct{}, len(b.Customers))
	for _, c := range b.Customers {
		if !checkID(c.ID, seen, bad) {
			continue
		}
		traits := make(map[string]sdk.Value, len(c.Traits))
		for name, val := range c.Traits {
			want, ok := v.traits[name]
			if checkTrait(c.ID, name, want, ok, &val, latest, bad) {
				traits[name] = val
			}
		}
		ch.Customers = append(ch.Customers, sdk.Customer{ID: c.ID, Traits: traits})
	}
	v.rest(ch, b.Deletes, b.Events, b.Consents, bad, latest)
	return ch, problems
}

// rest validates a batch's deletes, events and consent changes into ch.
func (v *Validator) rest(ch *Changes, deletes []string, events []sdk.Event, consents []sdk.ConsentChange, bad badFunc, latest time.Time) {
	for _, id := range deletes {
		if id != "" {
			ch.Deletes = append(ch.Deletes, id)
		}
	}
	seenEv := make(map[string]bool, len(events))
	for _, e := range events {
		switch {
		case e.CustomerID == "":
			bad("missing_id", "", "customer_id", "event %q has no customer id; it was skipped", e.ID)
		case e.ID == "":
			bad("missing_id", e.CustomerID, "id", "event %q has no id, so it cannot be deduplicated; it was skipped", e.Name)
		case e.Name == "":
			bad("missing_id", e.CustomerID, "name", "event %q has no name; it was skipped", e.ID)
		case e.Time.Before(earliest) || e.Time.After(latest):
			bad("absurd_time", e.CustomerID, "time", "event %q at %s is before 2000 or more than %s ahead; it was skipped", e.ID, e.Time.UTC().Format(time.RFC3339), v.maxFuture)
		case seenEv[e.ID]:
			// The same id twice in one batch: a replay; counted once.
		default:
			seenEv[e.ID] = true
			ch.Events = append(ch.Events, storage.Event{
				Source: v.source, ID: e.ID, CustomerID: e.CustomerID, Name: e.Name,
				Time: e.Time.UTC(), Value: e.Value, HasValue: e.HasValue,
			})
		}
	}
	for _, c := range consents {
		status := ""
		switch c.Status {
		case sdk.OptIn:
			status = storage.ConsentOptIn
		case sdk.OptOut:
			status = storage.ConsentOptOut
		}
		kind := strings.ToLower(c.Kind)
		switch {
		case c.CustomerID == "":
			bad("bad_consent", "", "customer_id", "a consent change without a customer id was skipped")
		case status == "":
			bad("bad_consent", c.CustomerID, "status", "consent status must be opt-in or opt-out; the record was skipped")
		case kind != "email" && kind != "sms" && kind != "webhook" && kind != "all":
			bad("bad_consent", c.CustomerID, "kind", "consent kind %q is not email, sms, webhook or all; the record was skipped", c.Kind)
		case c.Time.Before(earliest) || c.Time.After(latest):
			bad("absurd_time", c.CustomerID, "time", "consent time %s is out of range; the record was skipped", c.Time.UTC().Format(time.RFC3339))
		default:
			ch.Consents = append(ch.Consents, storage.Consent{
				CustomerID: c.CustomerID, Kind: kind, Status: status, Time: c.Time.UTC(), Source: v.source, Basis: c.Basis,
			})
		}
	}
}

// checkID reports whether a customer with this id may be stored: it has an
// id, not already in seen (the batch's ids so far), to which it is added.
// It records a problem when not.
func checkID(id string, seen map[string]struct{}, bad badFunc) bool {
	if id == "" {
		bad("missing_id", "", "", "a customer without an id was skipped")
		return false
	}
	if _, dup := seen[id]; dup {
		bad("duplicate_id", id, "", "customer id appears twice in one batch; the later record was skipped")
		return false
	}
	seen[id] = struct{}{}
	return true
}

// checkTrait reports whether val may be stored as trait name (of type want
// in the schema, if known), recording a problem when not.
func checkTrait(id, name string, want sdk.TraitType, known bool, val *sdk.Value, latest time.Time, bad badFunc) bool {
	switch {
	case !known:
		bad("unknown_trait", id, name, "trait %q is not in the source's schema; it was skipped", name)
	case !val.Null() && val.Type != want:
		bad("wrong_type", id, name, "expected a %s, got a %s; the field was skipped", want, val.Type)
	case val.Type == sdk.TypeTime && (val.Time.Before(earliest) || val.Time.After(latest.AddDate(100, 0, 0))):
		bad("absurd_time", id, name, "time %s is out of range; the field was skipped", val.Time.UTC().Format(time.RFC3339))
	default:
		return true
	}
	return false
}

// badFunc records a problem.
type badFunc func(kind, id, field, format string, args ...any)
