package tracksource

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// callType is a Segment call type.
type callType string

const (
	callIdentify callType = "identify"
	callTrack    callType = "track"
	callPage     callType = "page"
	callScreen   callType = "screen"
	callAlias    callType = "alias"
	callGroup    callType = "group"
)

func parseCallType(s string) (callType, bool) {
	switch t := callType(s); t {
	case callIdentify, callTrack, callPage, callScreen, callAlias, callGroup:
		return t, true
	}
	return "", false
}

// volatileKeys are left out of the hash that identifies a message without
// a messageId: a client sets them anew on every retry of the same message.
var volatileKeys = []string{"messageId", "sentAt", "writeKey", "_metadata", "receivedAt"}

// builder turns the messages of one request into one Batch.
type builder struct {
	st  *state
	log *slog.Logger
	// receivedAt is when the request arrived: the time of a message without
	// a timestamp, and the base of clock-skew correction.
	receivedAt time.Time
	// sentAt and context are the batch's own (the top level of /v1/batch),
	// used for items that have none.
	sentAt  any
	context map[string]any

	b         sdk.Batch
	customers map[string]int // customer id -> index in b.Customers
	seen      map[string]bool
	anonymous int // messages skipped under anonymous: skip
}

func newBuilder(st *state, log *slog.Logger, receivedAt time.Time) *builder {
	return &builder{st: st, log: log, receivedAt: receivedAt, customers: map[string]int{}, seen: map[string]bool{}}
}

// batch returns what the request produced, nil if nothing.
func (bl *builder) batch() *sdk.Batch {
	if bl.anonymous > 0 {
		bl.problem("", "userId", "%d message(s) had an anonymousId but no userId and were skipped (anonymous: skip); set anonymous: use to keep them under their anonymousId", bl.anonymous)
	}
	b := &bl.b
	if len(b.Customers)+len(b.Events)+len(b.Consents)+len(b.Problems) == 0 {
		return nil
	}
	return b
}

func (bl *builder) problem(customerID, field, format string, args ...any) {
	bl.b.Problems = append(bl.b.Problems, sdk.Problem{CustomerID: customerID, Field: field, Message: fmt.Sprintf(format, args...)})
}

// add maps one message. where names it in problems ("batch item 3", or ""
// for a single call).
func (bl *builder) add(typ callType, msg map[string]any, where string) {
	set := bl.st.set
	label := string(typ)
	if where != "" {
		label = where + " (" + string(typ) + ")"
	}

	id, ok := stringID(msg["messageId"])
	if !ok {
		id = hashID(typ, msg)
		bl.log.Debug("message without messageId; its id is a hash of its content", "type", string(typ), "id", id)
	}
	if bl.seen[id] {
		bl.log.Debug("message sent twice in one request; the repeat is ignored", "type", string(typ), "id", id)
		return
	}
	bl.seen[id] = true

	switch typ {
	case callAlias, callGroup:
		// Accepted so that SDKs do not retry them, but not mapped: Cohort
		// has no customer merge or accounts.
		bl.st.count(bl.log, "ignored_call", string(typ))
		return
	case callPage:
		if set.pageEvent == "" {
			bl.st.count(bl.log, "ignored_call", string(typ))
			return
		}
	case callScreen:
		if set.screenEvent == "" {
			bl.st.count(bl.log, "ignored_call", string(typ))
			return
		}
	}

	customerID, ok := stringID(msg["userId"])
	if !ok {
		anon, hasAnon := stringID(msg["anonymousId"])
		switch {
		case !hasAnon:
			bl.problem("", "userId", "%s: message %s has neither a userId nor an anonymousId; it was skipped", label, id)
			return
		case set.anonymous == anonymousSkip:
			bl.anonymous++
			return
		}
		customerID = anon
	}

	at := bl.messageTime(msg, customerID, label)

	switch typ {
	case callIdentify:
		traits, _ := msg["traits"].(map[string]any)
		if t, ok := msg["traits"]; ok && t != nil && traits == nil {
			bl.problem(customerID, "traits", "%s: traits is %s, not an object; no traits were read", label, kind(t))
		}
		bl.upsert(customerID, traits, "traits")
		bl.consent(customerID, traits, id, at)
	case callTrack, callPage, callScreen:
		name := set.pageEvent
		switch typ {
		case callTrack:
			name, _ = msg["event"].(string)
			if strings.TrimSpace(name) == "" {
				bl.problem(customerID, "event", "%s: message %s has no event name; it was skipped", label, id)
				return
			}
		case callScreen:
			name = set.screenEvent
		}
		if set.contextTraits {
			ctx := bl.messageContext(msg)
			if traits, ok := ctx["traits"].(map[string]any); ok {
				bl.upsert(customerID, traits, "context.traits")
			}
		}
		if !set.declared[name] && !set.allowUnknown {
			if bl.st.count(bl.log, "undeclared_event", name) {
				bl.problem(customerID, "event", "event %q is not listed under events and allow_unknown_events is false; it is skipped (reported once; further ones are counted in the log)", name)
			}
			return
		}
		props, _ := msg["properties"].(map[string]any)
		ev := sdk.Event{ID: id, CustomerID: customerID, Name: name, Time: at, Properties: properties(props)}
		if typ != callTrack {
			// The page or screen name and category, as Segment's spec
			// puts them beside the properties.
			for _, k := range []string{"name", "category"} {
				if s, ok := msg[k].(string); ok && s != "" {
					if _, taken := ev.Properties[k]; !taken {
						if ev.Properties == nil {
							ev.Properties = map[string]sdk.Value{}
						}
						ev.Properties[k] = sdk.String(s)
					}
				}
			}
		}
		ev.Value, ev.HasValue = bl.eventValue(props, customerID, label)
		bl.b.Events = append(bl.b.Events, ev)
	}
}

// messageTime is the message's timestamp corrected for the client's clock
// skew, as Segment does: timestamp + (receivedAt - sentAt) when sentAt is
// given. Without a timestamp it is receivedAt.
func (bl *builder) messageTime(msg map[string]any, customerID, label string) time.Time {
	raw, ok := msg["timestamp"]
	if !ok || raw == nil {
		return bl.receivedAt
	}
	s, _ := raw.(string)
	ts, ok := parseTime(s)
	if !ok {
		bl.problem(customerID, "timestamp", "%s: timestamp is %s that is not an ISO 8601 time; the time the message was received is used", label, kind(raw))
		return bl.receivedAt
	}
	sentRaw, ok := msg["sentAt"]
	if !ok || sentRaw == nil {
		sentRaw = bl.sentAt
	}
	if s, ok := sentRaw.(string); ok {
		if sent, ok := parseTime(s); ok {
			return ts.Add(bl.receivedAt.Sub(sent))
		}
	}
	return ts
}

// messageContext is the message's context merged over the batch's.
func (bl *builder) messageContext(msg map[string]any) map[string]any {
	ctx, _ := msg["context"].(map[string]any)
	if len(bl.context) == 0 {
		return ctx
	}
	merged := maps.Clone(bl.context)
	maps.Copy(merged, ctx)
	return merged
}

// upsert converts traits by the schema and merges them into the customer's
// upsert in this batch (later messages win). Keys the schema does not read
// are counted and reported once per name.
func (bl *builder) upsert(customerID string, traits map[string]any, where string) {
	set := bl.st.set
	values := map[string]sdk.Value{}
	for _, t := range set.traits {
		v, ok := lookup(traits, t.path)
		if !ok {
			continue
		}
		val, problem := toValue(v, t.typ)
		if problem != "" {
			bl.problem(customerID, t.name, "%s.%s %s; trait %q was skipped", where, strings.Join(t.path, "."), problem, t.name)
			continue
		}
		values[t.name] = val
	}
	for key := range traits {
		if set.roots[key] {
			continue
		}
		if bl.st.count(bl.log, "unknown_trait", key) {
			bl.problem(customerID, key, "%s.%s is not in the traits schema; it is ignored (reported once per name; further ones are counted in the log). Declare it under traits: to keep it", where, key)
		}
	}
	i, ok := bl.customers[customerID]
	if !ok {
		bl.customers[customerID] = len(bl.b.Customers)
		bl.b.Customers = append(bl.b.Customers, sdk.Customer{ID: customerID, Traits: values})
		return
	}
	maps.Copy(bl.b.Customers[i].Traits, values)
}

// consent turns the opt-in traits of an identify call into consent changes.
func (bl *builder) consent(customerID string, traits map[string]any, messageID string, at time.Time) {
	for _, c := range bl.st.set.consent {
		v, ok := lookup(traits, c.path)
		if !ok || v == nil {
			continue
		}
		var optIn, valid bool
		switch v := v.(type) {
		case bool:
			optIn, valid = v, true
		case string:
			optIn, valid = parseBool(v)
		}
		if !valid {
			bl.problem(customerID, "traits."+strings.Join(c.path, "."), "%s consent: traits.%s is %s, not true or false; no consent change was recorded", c.kind, strings.Join(c.path, "."), kind(v))
			continue
		}
		status := sdk.OptOut
		if optIn {
			status = sdk.OptIn
		}
		bl.b.Consents = append(bl.b.Consents, sdk.ConsentChange{
			CustomerID: customerID, Kind: c.kind, Status: status, Time: at,
			Basis: "track identify " + messageID,
		})
	}
}

// eventValue reads the event's value from its properties: value_property,
// or else the first of revenue, value and total that is present.
func (bl *builder) eventValue(props map[string]any, customerID, label string) (float64, bool) {
	for _, path := range bl.st.set.valuePaths {
		v, ok := lookup(props, path)
		if !ok || v == nil {
			continue
		}
		val, problem := toValue(v, sdk.TypeNumber)
		if problem != "" {
			field := "properties." + strings.Join(path, ".")
			bl.problem(customerID, field, "%s: %s %s; the event was kept without a value", label, field, problem)
			return 0, false
		}
		return val.Num, true
	}
	return 0, false
}

// hashID is the id of a message that has no messageId: a hash of its type
// and content without the keys a retry changes, so a retried message gets
// the same id and is counted once.
func hashID(typ callType, msg map[string]any) string {
	stable := make(map[string]any, len(msg))
	for k, v := range msg {
		stable[k] = v
	}
	for _, k := range volatileKeys {
		delete(stable, k)
	}
	stable["type"] = string(typ)
	// json.Marshal writes map keys sorted and json.Number as sent, so the
	// same message gives the same bytes.
	b, err := json.Marshal(stable)
	if err != nil {
		b = fmt.Append(nil, stable)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:16])
}
