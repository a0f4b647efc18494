package sdk

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/cohortd/cohort/sdk/proto/cohort/plugin/v1"
)

// ms is a time at millisecond precision, as it survives the wire.
func ms(y int, mo time.Month, d, h, mi, s, msec int) time.Time {
	return time.Date(y, mo, d, h, mi, s, msec*int(time.Millisecond), time.UTC)
}

// requireAllSet fails when any field of v (recursively, through pointers,
// slices and maps) has its zero value, so a round-trip test covers them all.
func requireAllSet(t *testing.T, name string, v any) {
	t.Helper()
	var walk func(path string, rv reflect.Value)
	walk = func(path string, rv reflect.Value) {
		if rv.Kind() != reflect.Struct && rv.IsZero() {
			t.Errorf("%s: fixture leaves %s zero; set it so the round trip covers it", name, path)
			return
		}
		switch rv.Kind() {
		case reflect.Pointer:
			walk(path, rv.Elem())
		case reflect.Struct:
			if rv.Type() == reflect.TypeOf(time.Time{}) {
				if rv.Interface().(time.Time).IsZero() {
					t.Errorf("%s: fixture leaves %s zero", name, path)
				}
				return
			}
			if rv.Type() == reflect.TypeOf(Value{}) {
				return // Values are covered by allValues.
			}
			for i := range rv.NumField() {
				walk(path+"."+rv.Type().Field(i).Name, rv.Field(i))
			}
		case reflect.Slice:
			if rv.Type().Elem().Kind() == reflect.Uint8 {
				return
			}
			for i := range rv.Len() {
				walk(path+"[]", rv.Index(i))
			}
		}
	}
	walk(name, reflect.ValueOf(v))
}

// allValues has a Value of every type, a null, and edge cases.
func allValues() map[string]Value {
	return map[string]Value{
		"plan":        String("pro"),
		"empty_str":   String(""),
		"ltv":         Number(1234.5),
		"zero":        Number(0),
		"negative":    Number(-0.25),
		"vip":         Bool(true),
		"not_vip":     Bool(false),
		"signed_up":   Time(ms(2024, 2, 29, 23, 59, 59, 999)),
		"before_1970": Time(ms(1969, 7, 20, 20, 17, 40, 123)),
		"epoch":       Time(time.Unix(0, 0).UTC()),
		"zero_time":   Time(time.Time{}),
		"tags":        List("a", "b", "c"),
		"no_tags":     List(),
		"removed":     {},
	}
}

func fullBatch() *Batch {
	return &Batch{
		Customers: []Customer{
			{ID: "c1", Traits: allValues()},
			{ID: "c2", Traits: map[string]Value{"email": String("ada@example.com")}},
		},
		Deletes: []string{"c9", "c10"},
		Events: []Event{{
			ID:         "e1",
			CustomerID: "c1",
			Name:       "order_completed",
			Time:       ms(2025, 1, 2, 3, 4, 5, 6),
			Value:      99.95,
			HasValue:   true,
			Properties: map[string]Value{"sku": String("A-1"), "qty": Number(2), "gift": Bool(true)},
		}},
		Consents: []ConsentChange{{
			CustomerID: "c1",
			Kind:       "email",
			Status:     OptOut,
			Time:       ms(2025, 5, 6, 7, 8, 9, 10),
			Basis:      "unsubscribe link, template v3",
		}},
		Cursor:   "offset:42",
		CaughtUp: true,
		Problems: []Problem{{CustomerID: "c3", Field: "birthday", Message: "not a date", Line: 7, Column: 12}},
	}
}

// wire sends m through protobuf encoding, as gRPC does.
func wire[M proto.Message](t *testing.T, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatalf("unmarshal %T: %v", m, err)
	}
	return out
}

func TestValueRoundTrip(t *testing.T) {
	for name, v := range allValues() {
		t.Run(name, func(t *testing.T) {
			pv, err := valueToPB(v)
			if err != nil {
				t.Fatal(err)
			}
			got := valueFromPB(wire(t, pv))
			if diff := cmp.Diff(v, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValueNullHasNoKind(t *testing.T) {
	pv, err := valueToPB(Value{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.GetKind() != nil {
		t.Errorf("null value encoded with kind %T, want none", pv.GetKind())
	}
	if got := valueFromPB(&pluginv1.Value{}); !got.Null() {
		t.Errorf("value without kind decoded as %+v, want null", got)
	}
}

func TestValueUnknownTypeFails(t *testing.T) {
	b := &Batch{Customers: []Customer{{ID: "c1", Traits: map[string]Value{"odd": {Type: TraitType(42)}}}}}
	_, err := batchToPB(b)
	if err == nil {
		t.Fatal("batch with a value of type 42 converted without error")
	}
	for _, want := range []string{`"c1"`, `"odd"`, "42"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestTimesTruncateToMillisecondsUTC(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	in := time.Date(2025, 6, 1, 12, 0, 0, 123_456_789, paris)
	pv, err := valueToPB(Time(in))
	if err != nil {
		t.Fatal(err)
	}
	got := valueFromPB(pv).Time
	want := time.Date(2025, 6, 1, 11, 0, 0, 123_000_000, time.UTC)
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("time = %v, want %v", got, want)
	}
	if msToTime(0) != (time.Time{}) || timeToMs(time.Time{}) != 0 {
		t.Error("zero time does not map to 0 ms and back")
	}
}

func TestBatchRoundTrip(t *testing.T) {
	in := fullBatch()
	requireAllSet(t, "Batch", in)
	pb, err := batchToPB(in)
	if err != nil {
		t.Fatal(err)
	}
	got := batchFromPB(wire(t, pb))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestEmptyBatchRoundTrip(t *testing.T) {
	for name, in := range map[string]*Batch{
		"zero":      {},
		"cursor":    {Cursor: "x", CaughtUp: true},
		"no traits": {Customers: []Customer{{ID: "c1"}}},
	} {
		t.Run(name, func(t *testing.T) {
			pb, err := batchToPB(in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(in, batchFromPB(wire(t, pb))); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigureRequestRoundTrip(t *testing.T) {
	in := ConfigureRequest{
		Instance:    "crm",
		Config:      []byte("path: /tmp/x\n"),
		PublicURL:   "https://cohort.example.com",
		WebhookPath: "/webhooks/crm",
	}
	requireAllSet(t, "ConfigureRequest", in)
	got := configureRequestFromPB(wire(t, configureRequestToPB(&in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestSourceInfoRoundTrip(t *testing.T) {
	in := SourceInfo{
		Name:    "csv",
		Version: "1.2.3",
		Traits: []Trait{
			{Name: "email", Type: TypeString, Description: "work address"},
			{Name: "ltv", Type: TypeNumber, Description: "lifetime value"},
			{Name: "vip", Type: TypeBool, Description: "flag"},
			{Name: "signed_up", Type: TypeTime, Description: "first seen"},
			{Name: "tags", Type: TypeStringList, Description: "labels"},
		},
		EventNames: []string{"order_completed", "signed_up"},
		Contact:    ContactFields{Email: "email", Phone: "phone", Timezone: "tz"},
		Webhooks:   true,
	}
	requireAllSet(t, "SourceInfo", in)
	got := sourceInfoFromPB(wire(t, sourceInfoToPB(&in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func webhookRequest() *WebhookRequest {
	return &WebhookRequest{
		Method:     "POST",
		URL:        "https://cohort.example.com/webhooks/sms/status?x=1",
		Path:       "/status",
		Headers:    []Header{{Name: "X-Signature", Values: []string{"abc"}}, {Name: "Accept", Values: []string{"a", "b"}}},
		Body:       []byte(`{"ok":true}`),
		RemoteAddr: "192.0.2.10:5555",
	}
}

func TestWebhookRequestRoundTrip(t *testing.T) {
	in := webhookRequest()
	requireAllSet(t, "WebhookRequest", in)
	got := webhookRequestFromPB(wire(t, webhookRequestToPB(in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if got.Header("x-signature") != "abc" {
		t.Errorf("Header(x-signature) = %q, want abc", got.Header("x-signature"))
	}
}

func TestSourceWebhookResponseRoundTrip(t *testing.T) {
	in := &SourceWebhookResponse{
		Response: HTTPResponse{Status: 202, Headers: []Header{{Name: "Content-Type", Values: []string{"application/json"}}}, Body: []byte(`{}`)},
		Batch:    fullBatch(),
	}
	requireAllSet(t, "SourceWebhookResponse", in)
	pb, err := sourceWebhookResponseToPB(in)
	if err != nil {
		t.Fatal(err)
	}
	got := sourceWebhookResponseFromPB(wire(t, pb))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestChannelInfoRoundTrip(t *testing.T) {
	in := ChannelInfo{Name: "file", Version: "0.1.0", Kind: "sms", MaxBatch: 100, RateHint: 12.5, Webhooks: true}
	requireAllSet(t, "ChannelInfo", in)
	got := channelInfoFromPB(wire(t, channelInfoToPB(&in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	in := []Message{{
		Key:        "o-1",
		CustomerID: "c1",
		To:         "ada@example.com",
		From:       "news@example.com",
		ReplyTo:    "help@example.com",
		Subject:    "Hello",
		Text:       "Hi Ada",
		HTML:       "<p>Hi Ada</p>",
		Headers:    []Header{{Name: "List-Unsubscribe", Values: []string{"<https://example.com/u>"}}},
		Metadata:   map[string]string{"campaign": "spring", "variant": "b"},
	}, {
		Key: "o-2", CustomerID: "c2", To: "bob@example.com",
	}}
	requireAllSet(t, "Message", in[0])
	got := messagesFromPB(wire(t, messagesToPB(in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if got := messagesFromPB(wire(t, messagesToPB(nil))); got != nil {
		t.Errorf("no messages came back as %v", got)
	}
}

func TestResultsRoundTrip(t *testing.T) {
	in := []Result{
		{Key: "o-1", Status: Retryable, ProviderID: "p-1", RetryAfter: 1500 * time.Millisecond, Reason: "rate limited", Code: "429"},
		{Key: "o-2", Status: Accepted, ProviderID: "p-2"},
		{Key: "o-3", Status: Permanent, Reason: "invalid address", Code: "21211"},
		{Key: "o-4", Status: Suppress, Reason: "unsubscribed", Code: "21610"},
	}
	requireAllSet(t, "Result", in[0])
	got := resultsFromPB(wire(t, resultsToPB(in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestChannelWebhookResponseRoundTrip(t *testing.T) {
	in := &ChannelWebhookResponse{
		Response: HTTPResponse{Status: 401, Headers: []Header{{Name: "WWW-Authenticate", Values: []string{"Basic"}}}, Body: []byte("no")},
		Events: []DeliveryEvent{{
			Key:        "o-1",
			ProviderID: "p-1",
			Type:       DeliveryClicked,
			Address:    "ada@example.com",
			Time:       ms(2025, 7, 8, 9, 10, 11, 12),
			Reason:     "clicked",
			URL:        "https://example.com/offer",
			EventID:    "ev-1",
		}},
	}
	requireAllSet(t, "ChannelWebhookResponse", in)
	got := channelWebhookResponseFromPB(wire(t, channelWebhookResponseToPB(in)))
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// TestEnumsMatchWire checks that every SDK enum value has the protobuf
// number of the same name, as the converters cast between them.
func TestEnumsMatchWire(t *testing.T) {
	check := func(kind string, sdkName string, pbName string, want string) {
		t.Helper()
		if !strings.HasSuffix(pbName, want) {
			t.Errorf("%s %s is %s on the wire, want *%s", kind, sdkName, pbName, want)
		}
	}
	traitNames := map[TraitType]string{TypeUnknown: "UNSPECIFIED", TypeString: "_STRING", TypeNumber: "NUMBER", TypeBool: "BOOL", TypeTime: "TIME", TypeStringList: "STRING_LIST"}
	for v, want := range traitNames {
		check("trait type", v.String(), pluginv1.TraitType(v).String(), want)
	}
	if len(pluginv1.TraitType_name) != len(traitNames) {
		t.Errorf("wire has %d trait types, sdk %d", len(pluginv1.TraitType_name), len(traitNames))
	}
	for v, want := range map[ConsentStatus]string{ConsentUnknown: "UNSPECIFIED", OptIn: "OPT_IN", OptOut: "OPT_OUT"} {
		check("consent status", want, pluginv1.ConsentStatus(v).String(), want)
	}
	for s := StatusUnknown; s <= OutcomeUnknown; s++ {
		want := strings.ToUpper(s.String())
		check("result status", s.String(), pluginv1.ResultStatus(s).String(), want)
	}
	if len(pluginv1.ResultStatus_name) != int(OutcomeUnknown)+1 {
		t.Errorf("wire has %d result statuses, sdk %d", len(pluginv1.ResultStatus_name), int(OutcomeUnknown)+1)
	}
	for d := DeliveryUnknown; d <= DeliveryFailed; d++ {
		want := strings.ToUpper(d.String())
		if d == DeliveryUnknown {
			want = "UNSPECIFIED"
		}
		check("delivery type", d.String(), pluginv1.DeliveryType(d).String(), want)
	}
	if len(pluginv1.DeliveryType_name) != int(DeliveryFailed)+1 {
		t.Errorf("wire has %d delivery types, sdk %d", len(pluginv1.DeliveryType_name), int(DeliveryFailed)+1)
	}
}
