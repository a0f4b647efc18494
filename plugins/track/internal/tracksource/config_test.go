package tracksource

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortd/cohort/sdk"
)

func TestConfigErrors(t *testing.T) {
	const keys = "write_keys: [k-0123456789abcdef]\n"
	for _, tc := range []struct {
		name, config, field, msg string
	}{
		{"empty config", "", "write_keys", "write_keys: required; list at least one write key"},
		{"empty key list", "write_keys: []", "write_keys", "write_keys: required"},
		{"empty key", `write_keys: [""]`, "write_keys[0]", "write_keys[0]: is empty"},
		{"key with a newline", "write_keys: [\"abc\\n\"]", "write_keys[0]", "contains a space, line break or control character"},
		{"key with a colon", `write_keys: ["a:b"]`, "write_keys[0]", `contains ":"`},
		{"keys not a list", "write_keys: abc", "write_keys", `line 1:13: expected a list, found "abc"`},
		{"unknown key", keys + "trait: {}", "trait", `line 2:1: unknown key "trait" at the top level (known keys: allow_unknown_events, anonymous, consent, context_traits, email, events, page_event, phone, screen_event, timezone, traits, value_property, write_keys); did you mean "traits"?`},
		{"duplicate key", keys + "anonymous: use\nanonymous: skip", "anonymous", `line 3:1: duplicate key "anonymous"`},
		{"not YAML", "write_keys: [a", "", `line 1:1: invalid YAML: did not find expected ',' or ']'`},
		{"not a mapping", "- a", "", "line 1:1: expected a mapping of keys to values, found a list"},
		{"trait type missing", keys + "traits:\n  plan: {from: x}", "traits.plan.type", "traits.plan.type: required"},
		{"trait type unknown", keys + "traits:\n  plan: int", "traits.plan.type", `unknown type "int"; use string, number, bool, time or list`},
		{"trait unknown key", keys + "traits:\n  plan: {type: string, form: x}", "traits.plan.form", `line 3:24: unknown key "form" in traits.plan (known keys: from, type); did you mean "from"?`},
		{"trait name not an identifier", keys + "traits:\n  first-name: string", "traits.first-name", "is not an identifier"},
		{"trait name reserved", keys + "traits:\n  in: string", "traits.in", "is a word of the rule language"},
		{"trait from empty step", keys + "traits:\n  city: {type: string, from: address..city}", "traits.city.from", "is not a path"},
		{"traits not a mapping", keys + "traits: [a]", "traits", "line 2:9: expected a mapping of keys to values, found a list"},
		{"trait neither a type nor a mapping", keys + "traits:\n  plan: [string]", "traits.plan", "line 3:9: expected a mapping of keys to values, found a list"},
		{"email not declared", keys + "email: mail", "email", `names trait "mail", which is not declared`},
		{"email not a string", keys + "traits:\n  email: list\nemail: email", "email", "of type list; a contact trait must be of type string"},
		{"event empty", keys + `events: ["Signed Up", ""]`, "events[1]", "an event name is empty"},
		{"event listed twice", keys + `events: [a, b, a]`, "events[2]", `event "a" is listed twice`},
		{"event padded", keys + `events: [" a"]`, "events[0]", "starts or ends with a space"},
		{"anonymous unknown", keys + "anonymous: keep", "anonymous", `unknown value "keep"; use skip`},
		{"allow_unknown_events not a bool", keys + "allow_unknown_events: sometimes", "allow_unknown_events", `line 2:23: expected true or false, found "sometimes"`},
		{"context_traits not a bool", keys + "context_traits: 2", "context_traits", `line 2:17: expected true or false, found "2"`},
		{"value_property bad path", keys + "value_property: a.", "value_property", "is not a path"},
		{"page_event padded", keys + `page_event: "page "`, "page_event", `or set it to "" to ignore these calls`},
		{"consent unknown key", keys + "consent: {mail: x}", "consent.mail", `line 2:11: unknown key "mail" in consent (known keys: email, sms); did you mean "email"?`},
		{"consent bad path", keys + "consent: {sms: .x}", "consent.sms", "is not a path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.config))
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("parseConfig = %v, want an *sdk.Error", err)
			}
			if e.Code != sdk.InvalidConfig || e.Field != tc.field || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("error = {%v %q %q}, want {INVALID_CONFIG %q containing %q}", e.Code, e.Field, e.Message, tc.field, tc.msg)
			}
			// The plugin's own checks start the message with the field;
			// sdk.DecodeConfig's errors start it with the position, and
			// Error(), which the daemon logs, names the field.
			if strings.HasPrefix(tc.msg, "line ") {
				if !strings.HasPrefix(e.Message, tc.msg) || !strings.Contains(err.Error(), tc.field) {
					t.Errorf("error %q: want a message starting with %q, and the field %q in the text", err, tc.msg, tc.field)
				}
			} else if !strings.HasPrefix(e.Message, tc.field) {
				t.Errorf("message %q does not start with the field %q", e.Message, tc.field)
			}
		})
	}
}

func TestConfigureInfo(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         sdk.SourceInfo
	}{
		{
			name:   "minimal",
			config: "write_keys: [k-0123456789abcdef]",
			want:   sdk.SourceInfo{Name: "track", Version: Version, EventNames: []string{"page_viewed", "screen_viewed"}},
		},
		{
			name: "schema, contact defaults and declared events",
			config: `
write_keys: [k-0123456789abcdef]
traits:
  phone: string
  email: string
  timezone: string
  city: {type: string, from: address.city}
  ltv: {type: number}
events: [Order Completed, page_viewed]
`,
			want: sdk.SourceInfo{
				Name: "track", Version: Version,
				Traits: []sdk.Trait{
					{Name: "city", Type: sdk.TypeString, Description: "Segment trait address.city"},
					{Name: "email", Type: sdk.TypeString, Description: "Segment trait email"},
					{Name: "ltv", Type: sdk.TypeNumber, Description: "Segment trait ltv"},
					{Name: "phone", Type: sdk.TypeString, Description: "Segment trait phone"},
					{Name: "timezone", Type: sdk.TypeString, Description: "Segment trait timezone"},
				},
				EventNames: []string{"Order Completed", "page_viewed", "screen_viewed"},
				Contact:    sdk.ContactFields{Email: "email", Phone: "phone", Timezone: "timezone"},
			},
		},
		{
			name: "explicit contact traits; page and screen renamed or off",
			config: `
write_keys: [k-0123456789abcdef]
traits:
  email: list
  work_email: string
  mobile: {type: string, from: phone}
email: work_email
phone: mobile
page_event: Viewed Page
screen_event: ""
`,
			want: sdk.SourceInfo{
				Name: "track", Version: Version,
				Traits: []sdk.Trait{
					{Name: "email", Type: sdk.TypeStringList, Description: "Segment trait email"},
					{Name: "mobile", Type: sdk.TypeString, Description: "Segment trait phone"},
					{Name: "work_email", Type: sdk.TypeString, Description: "Segment trait work_email"},
				},
				EventNames: []string{"Viewed Page"},
				Contact:    sdk.ContactFields{Email: "work_email", Phone: "mobile"},
			},
		},
		{
			name: "contact defaults can be turned off",
			config: `
write_keys: [k-0123456789abcdef]
traits: {email: string}
email: ""
`,
			want: sdk.SourceInfo{
				Name: "track", Version: Version,
				Traits:     []sdk.Trait{{Name: "email", Type: sdk.TypeString, Description: "Segment trait email"}},
				EventNames: []string{"page_viewed", "screen_viewed"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
			got, err := s.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(tc.config)})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("info (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigureWarnsOfShortKeys(t *testing.T) {
	logs := &logBuffer{}
	s := New(WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if _, err := s.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("write_keys: [short, k-0123456789abcdef]")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "count=1") {
		t.Errorf("no warning for one short key:\n%s", logs)
	}
	if strings.Contains(logs.String(), "short") && strings.Contains(logs.String(), "[short") {
		t.Errorf("the key itself is logged:\n%s", logs)
	}
}

// TestConfigureReplaces checks that the last successful Configure wins and
// that a failed one changes nothing.
func TestConfigureReplaces(t *testing.T) {
	s, _ := newTestSource(t, "write_keys: [first-key-0123456789]")
	if _, err := s.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("write_keys: [second-key-0123456789]")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte("write_keys: []")}); err == nil {
		t.Fatal("empty write_keys accepted")
	}
	for key, want := range map[string]int{"first-key-0123456789": 401, "second-key-0123456789": 200} {
		resp := call(t, s, post("/v1/track", oneTrack, withAuth(basicAuth(key, ""))))
		if resp.Response.Status != want {
			t.Errorf("key %s: status %d, want %d", key, resp.Response.Status, want)
		}
	}
}
