package tracksource

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortd/cohort/sdk"
)

// webhookCase is one request and what the plugin must answer and return.
type webhookCase struct {
	name string
	// config is appended to baseConfig.
	config string
	req    *sdk.WebhookRequest
	status int
	// code is the error code of a refused request's JSON body.
	code string
	// want is the batch to commit, Problems aside; nil: nothing to commit.
	want *sdk.Batch
	// problems are "customer|field|text the message contains", in order.
	problems []string
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	for _, group := range [][]webhookCase{
		callTypeCases(), batchCases(), encodingCases(), authCases(), limitCases(),
		malformedCases(), identityCases(), traitCases(), eventCases(),
	} {
		for _, tc := range group {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s, _ := newTestSource(t, baseConfig+tc.config)
				resp := call(t, s, tc.req)
				checkResponse(t, resp, tc)
			})
		}
	}
}

func checkResponse(t *testing.T, resp *sdk.SourceWebhookResponse, tc webhookCase) {
	t.Helper()
	if resp.Response.Status != tc.status {
		t.Fatalf("status = %d, want %d; body %s", resp.Response.Status, tc.status, resp.Response.Body)
	}
	if got := header(resp.Response, "Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
	}
	switch {
	case tc.status == http.StatusOK:
		if string(resp.Response.Body) != `{"success":true}` {
			t.Errorf("body = %s, want {\"success\":true}", resp.Response.Body)
		}
		if ct := header(resp.Response, "Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
	case tc.code != "":
		e := decodeError(t, resp.Response.Body)
		if e.Success || e.Code != tc.code || e.Message == "" {
			t.Errorf("error body = %+v, want success false, code %q and a message", e, tc.code)
		}
		if resp.Batch != nil {
			t.Errorf("a refused request returned a batch to commit: %+v", resp.Batch)
		}
	}
	var got sdk.Batch
	var problems []sdk.Problem
	if resp.Batch != nil {
		got = *resp.Batch
		problems = got.Problems
		got.Problems = nil
	}
	want := sdk.Batch{}
	if tc.want != nil {
		want = *tc.want
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("batch (-want +got):\n%s", diff)
	}
	checkProblems(t, problems, tc.problems)
}

func checkProblems(t *testing.T, got []sdk.Problem, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), formatProblems(got))
		return
	}
	for i, w := range want {
		parts := strings.SplitN(w, "|", 3)
		p := got[i]
		if p.CustomerID != parts[0] || p.Field != parts[1] || !strings.Contains(p.Message, parts[2]) {
			t.Errorf("problem %d = %+v, want customer %q, field %q, message containing %q", i, p, parts[0], parts[1], parts[2])
		}
	}
}

func formatProblems(ps []sdk.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %q|%q|%s\n", p.CustomerID, p.Field, p.Message)
	}
	return b.String()
}

func callTypeCases() []webhookCase {
	return []webhookCase{
		{
			name: "identify maps traits by the schema and opt-ins to consent",
			req: post("/v1/identify", `{"type":"identify","messageId":"m-id-1","userId":"u1",
				"timestamp":"2025-06-01T11:00:00Z","sentAt":"2025-06-01T11:59:00Z",
				"traits":{"email":"ada@example.com","firstName":"Ada","address":{"city":"London","street":"1 Main St"},
				"plan":"pro","ltv":"120.5","vip":true,"createdAt":"2024-01-02T03:04:05.000Z","tags":["a",2],
				"email_opt_in":true,"sms_opt_in":"no","favorite_color":"blue"}}`),
			status: 200,
			want: &sdk.Batch{
				Customers: []sdk.Customer{{ID: "u1", Traits: map[string]sdk.Value{
					"email": sdk.String("ada@example.com"), "first_name": sdk.String("Ada"), "city": sdk.String("London"),
					"plan": sdk.String("pro"), "ltv": sdk.Number(120.5), "vip": sdk.Bool(true),
					"signed_up_at": sdk.Time(ts("2024-01-02T03:04:05Z")), "tags": sdk.List("a", "2"),
				}}},
				// The client's clock was a minute behind: 11:00 + (12:00 - 11:59).
				Consents: []sdk.ConsentChange{
					{CustomerID: "u1", Kind: "email", Status: sdk.OptIn, Time: ts("2025-06-01T11:01:00Z"), Basis: "track identify m-id-1"},
					{CustomerID: "u1", Kind: "sms", Status: sdk.OptOut, Time: ts("2025-06-01T11:01:00Z"), Basis: "track identify m-id-1"},
				},
			},
			problems: []string{"u1|favorite_color|not in the traits schema"},
		},
		{
			name: "track becomes an event with skew-corrected time, value and properties",
			req: post("/v1/track", `{"type":"track","messageId":"m-tr-1","userId":"u1","event":"Order Completed",
				"timestamp":"2025-06-01T11:00:00.250Z","sentAt":"2025-06-01T11:59:00Z",
				"properties":{"revenue":19.99,"currency":"USD","product":{"sku":"A1","price":10},
				"products":[{"sku":"A1"}],"coupons":["X","Y"],"gift":false,"note":null}}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{
				ID: "m-tr-1", CustomerID: "u1", Name: "Order Completed", Time: ts("2025-06-01T11:01:00.250Z"),
				Value: 19.99, HasValue: true,
				Properties: map[string]sdk.Value{
					"revenue": sdk.Number(19.99), "currency": sdk.String("USD"),
					"product.sku": sdk.String("A1"), "product.price": sdk.Number(10),
					"products": sdk.String(`[{"sku":"A1"}]`), "coupons": sdk.List("X", "Y"), "gift": sdk.Bool(false),
				},
			}}},
		},
		{
			name:   "track without sentAt keeps its timestamp",
			req:    post("/v1/track", `{"messageId":"m2","userId":"u1","event":"Signed Up","timestamp":"2025-05-31T08:00:00+02:00"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "m2", CustomerID: "u1", Name: "Signed Up", Time: ts("2025-05-31T06:00:00Z")}}},
		},
		{
			name:   "track without timestamp happened when received",
			req:    post("/v1/track", `{"messageId":"m3","userId":"u1","event":"Signed Up","sentAt":"2025-06-01T11:00:00Z"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "m3", CustomerID: "u1", Name: "Signed Up", Time: received}}},
		},
		{
			name: "page becomes page_viewed with its name and category",
			req: post("/v1/page", `{"messageId":"m-pg","userId":"u1","name":"Pricing","category":"Docs",
				"properties":{"url":"https://example.com/pricing","title":"Pricing"},"timestamp":"2025-06-01T10:00:00Z"}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "m-pg", CustomerID: "u1", Name: "page_viewed", Time: ts("2025-06-01T10:00:00Z"),
				Properties: map[string]sdk.Value{"url": sdk.String("https://example.com/pricing"), "title": sdk.String("Pricing"),
					"name": sdk.String("Pricing"), "category": sdk.String("Docs")}}}},
		},
		{
			name: "analytics.js page: short path, text/plain, write key in the body",
			req: post("/v1/p", `{"type":"page","messageId":"ajs-1","userId":"u1","writeKey":"test-key-0123456789abcdef",
				"properties":{"path":"/"},"timestamp":"2025-06-01T10:00:00.000Z","sentAt":"2025-06-01T10:00:00.000Z"}`,
				withAuth(""), withHeader("Content-Type", "text/plain")),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "ajs-1", CustomerID: "u1", Name: "page_viewed", Time: received,
				Properties: map[string]sdk.Value{"path": sdk.String("/")}}}},
		},
		{
			name:   "screen becomes screen_viewed",
			req:    post("/v1/screen", `{"messageId":"m-sc","userId":"u1","name":"Home","timestamp":"2025-06-01T10:00:00Z"}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "m-sc", CustomerID: "u1", Name: "screen_viewed", Time: ts("2025-06-01T10:00:00Z"),
				Properties: map[string]sdk.Value{"name": sdk.String("Home")}}}},
		},
		{
			name:   "page_event renames page events",
			config: "page_event: pageview\n",
			req:    post("/v1/page", `{"messageId":"m-pg","userId":"u1","timestamp":"2025-06-01T10:00:00Z"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "m-pg", CustomerID: "u1", Name: "pageview", Time: ts("2025-06-01T10:00:00Z")}}},
		},
		{
			name:   "page_event empty ignores page calls",
			config: "page_event: \"\"\n",
			req:    post("/v1/page", `{"messageId":"m-pg","userId":"u1"}`),
			status: 200,
		},
		{
			name:   "alias is accepted and ignored",
			req:    post("/v1/alias", `{"messageId":"m-al","previousId":"anon-1","userId":"u1"}`),
			status: 200,
		},
		{
			name:   "group is accepted and ignored",
			req:    post("/v1/group", `{"messageId":"m-gr","userId":"u1","groupId":"acme","traits":{"name":"Acme"}}`),
			status: 200,
		},
		{
			name:   "OPTIONS preflight needs no key",
			req:    post("/v1/batch", "", withMethod("OPTIONS"), withAuth("")),
			status: http.StatusNoContent,
		},
		{
			name:   "GET is refused",
			req:    post("/v1/batch", "", withMethod("GET")),
			status: http.StatusMethodNotAllowed, code: "method_not_allowed",
		},
		{
			name:   "unknown endpoint",
			req:    post("/v2/track", `{}`),
			status: http.StatusNotFound, code: "not_found",
		},
		{
			name:   "a trailing slash is accepted",
			req:    post("/v1/track/", `{"messageId":"m4","userId":"u1","event":"Signed Up"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "m4", CustomerID: "u1", Name: "Signed Up", Time: received}}},
		},
	}
}

func batchCases() []webhookCase {
	return []webhookCase{
		{
			name: "batch maps every call type and corrects skew with the batch's sentAt",
			req: post("/v1/batch", batchOf(`"sentAt":"2025-06-01T11:58:00Z"`,
				`{"type":"identify","messageId":"b1","userId":"u2","timestamp":"2025-06-01T11:50:00Z","traits":{"plan":"basic"}}`,
				`{"type":"track","messageId":"b2","userId":"u2","event":"Signed Up","timestamp":"2025-06-01T11:51:00Z"}`,
				`{"type":"page","messageId":"b3","userId":"u2","timestamp":"2025-06-01T11:52:00Z"}`,
				`{"type":"screen","messageId":"b4","userId":"u2","timestamp":"2025-06-01T11:53:00Z"}`,
				`{"type":"alias","messageId":"b5","previousId":"a","userId":"u2"}`,
				`{"type":"group","messageId":"b6","userId":"u2","groupId":"g"}`,
			)),
			status: 200,
			want: &sdk.Batch{
				Customers: []sdk.Customer{{ID: "u2", Traits: map[string]sdk.Value{"plan": sdk.String("basic")}}},
				Events: []sdk.Event{
					{ID: "b2", CustomerID: "u2", Name: "Signed Up", Time: ts("2025-06-01T11:53:00Z")},
					{ID: "b3", CustomerID: "u2", Name: "page_viewed", Time: ts("2025-06-01T11:54:00Z")},
					{ID: "b4", CustomerID: "u2", Name: "screen_viewed", Time: ts("2025-06-01T11:55:00Z")},
				},
			},
		},
		{
			name: "a message's own sentAt beats the batch's",
			req: post("/v1/batch", batchOf(`"sentAt":"2025-06-01T11:58:00Z"`,
				`{"type":"track","messageId":"b1","userId":"u2","event":"Signed Up","timestamp":"2025-06-01T11:00:00Z","sentAt":"2025-06-01T12:30:00Z"}`,
			)),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "b1", CustomerID: "u2", Name: "Signed Up", Time: ts("2025-06-01T10:30:00Z")}}},
		},
		{
			name: "one customer's identifies in a batch merge, later wins",
			req: post("/v1/batch", batchOf("",
				`{"type":"identify","messageId":"c1","userId":"u3","traits":{"plan":"basic","email":"u3@example.com"}}`,
				`{"type":"identify","messageId":"c2","userId":"u3","traits":{"plan":"pro"}}`,
			)),
			status: 200,
			want: &sdk.Batch{Customers: []sdk.Customer{{ID: "u3", Traits: map[string]sdk.Value{
				"plan": sdk.String("pro"), "email": sdk.String("u3@example.com")}}}},
		},
		{
			name: "a messageId repeated in one batch counts once",
			req: post("/v1/batch", batchOf("",
				`{"type":"track","messageId":"dup","userId":"u1","event":"Signed Up"}`,
				`{"type":"track","messageId":"dup","userId":"u1","event":"Signed Up"}`,
			)),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "dup", CustomerID: "u1", Name: "Signed Up", Time: received}}},
		},
		{
			name: "items without a type, of an unknown type or not objects are skipped",
			req: post("/v1/batch", batchOf("",
				`{"messageId":"x1","userId":"u1","event":"Signed Up"}`,
				`{"type":"bogus","messageId":"x2","userId":"u1"}`,
				`42`,
				`null`,
				`{"type":"track","messageId":"x3","userId":"u1","event":"Signed Up"}`,
			)),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "x3", CustomerID: "u1", Name: "Signed Up", Time: received}}},
			problems: []string{
				"|type|batch item 0 has no type",
				"|type|batch item 1 has type \"bogus\"",
				"|batch|batch item 2 is a number",
				"|batch|batch item 3 is null",
			},
		},
		{
			name:   "context_traits: the batch's context is merged under each message's",
			config: "context_traits: true\n",
			req: post("/v1/batch", batchOf(`"context":{"traits":{"plan":"team"},"library":{"name":"x"}}`,
				`{"type":"track","messageId":"k1","userId":"u4","event":"Signed Up"}`,
				`{"type":"track","messageId":"k2","userId":"u5","event":"Signed Up","context":{"traits":{"vip":true}}}`,
			)),
			status: 200,
			want: &sdk.Batch{
				Customers: []sdk.Customer{
					{ID: "u4", Traits: map[string]sdk.Value{"plan": sdk.String("team")}},
					{ID: "u5", Traits: map[string]sdk.Value{"vip": sdk.Bool(true)}},
				},
				Events: []sdk.Event{
					{ID: "k1", CustomerID: "u4", Name: "Signed Up", Time: received},
					{ID: "k2", CustomerID: "u5", Name: "Signed Up", Time: received},
				},
			},
		},
		{
			name:   "context traits are not read unless context_traits is true",
			req:    post("/v1/track", `{"messageId":"k1","userId":"u4","event":"Signed Up","context":{"traits":{"plan":"team"}}}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "k1", CustomerID: "u4", Name: "Signed Up", Time: received}}},
		},
		{
			name:   "an empty batch is accepted",
			req:    post("/v1/batch", `{"batch":[]}`),
			status: 200,
		},
		{
			name:   "analytics.js batching endpoint /v1/b",
			req:    post("/v1/b", batchOf("", `{"type":"track","messageId":"ab1","userId":"u1","event":"Signed Up"}`)),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "ab1", CustomerID: "u1", Name: "Signed Up", Time: received}}},
		},
	}
}

const oneTrack = `{"type":"track","messageId":"g1","userId":"u1","event":"Signed Up"}`

var oneTrackEvent = &sdk.Batch{Events: []sdk.Event{{ID: "g1", CustomerID: "u1", Name: "Signed Up", Time: received}}}

func encodingCases() []webhookCase {
	return []webhookCase{
		{name: "gzip batch", req: post("/v1/batch", batchOf("", oneTrack), gzipped), status: 200, want: oneTrackEvent},
		{name: "gzip single call", req: post("/v1/track", oneTrack, gzipped), status: 200, want: oneTrackEvent},
		{
			name:   "x-gzip",
			req:    post("/v1/track", oneTrack, gzipped, func(r *sdk.WebhookRequest) { r.Headers[len(r.Headers)-1].Values = []string{"x-gzip"} }),
			status: 200, want: oneTrackEvent,
		},
		{
			name: "gzip without Content-Encoding is recognised",
			req: post("/v1/batch", batchOf("", oneTrack), func(r *sdk.WebhookRequest) {
				r.Body = gzipBytes(r.Body)
			}),
			status: 200, want: oneTrackEvent,
		},
		{
			name:   "Content-Encoding gzip on a plain body",
			req:    post("/v1/batch", batchOf("", oneTrack), withHeader("Content-Encoding", "gzip")),
			status: http.StatusBadRequest, code: "invalid_gzip",
		},
		{
			name:   "truncated gzip",
			req:    post("/v1/batch", batchOf("", oneTrack), gzipped, func(r *sdk.WebhookRequest) { r.Body = r.Body[:len(r.Body)-6] }),
			status: http.StatusBadRequest, code: "invalid_gzip",
		},
		{
			name:   "brotli is not supported",
			req:    post("/v1/batch", batchOf("", oneTrack), withHeader("Content-Encoding", "br")),
			status: http.StatusUnsupportedMediaType, code: "unsupported_encoding",
		},
	}
}

func authCases() []webhookCase {
	return []webhookCase{
		{name: "no key", req: post("/v1/track", oneTrack, withAuth("")), status: 401, code: "missing_write_key"},
		{name: "wrong key", req: post("/v1/track", oneTrack, withAuth(basicAuth("nope", ""))), status: 401, code: "invalid_write_key"},
		{name: "empty key", req: post("/v1/track", oneTrack, withAuth(basicAuth("", ""))), status: 401, code: "invalid_write_key"},
		{name: "second key", req: post("/v1/track", oneTrack, withAuth(basicAuth(otherKey, ""))), status: 200, want: oneTrackEvent},
		{name: "password ignored", req: post("/v1/track", oneTrack, withAuth(basicAuth(testKey, "x"))), status: 200, want: oneTrackEvent},
		{name: "bearer refused", req: post("/v1/track", oneTrack, withAuth("Bearer "+testKey)), status: 401, code: "invalid_authorization"},
		{name: "bad base64", req: post("/v1/track", oneTrack, withAuth("Basic !!!")), status: 401, code: "invalid_authorization"},
		{
			name:   "writeKey in the body",
			req:    post("/v1/track", `{"writeKey":"test-key-0123456789abcdef","messageId":"g1","userId":"u1","event":"Signed Up"}`, withAuth("")),
			status: 200, want: oneTrackEvent,
		},
		{
			name:   "wrong writeKey in the body",
			req:    post("/v1/track", `{"writeKey":"nope","messageId":"g1","userId":"u1","event":"Signed Up"}`, withAuth("")),
			status: 401, code: "invalid_write_key",
		},
		{
			name:   "writeKey at the top of a batch",
			req:    post("/v1/batch", batchOf(`"writeKey":"test-key-0123456789abcdef"`, oneTrack), withAuth("")),
			status: 200, want: oneTrackEvent,
		},
		{
			name: "writeKey in the first batch item",
			req: post("/v1/batch", batchOf("", `{"writeKey":"test-key-0123456789abcdef","type":"track","messageId":"g1","userId":"u1","event":"Signed Up"}`),
				withAuth("")),
			status: 200, want: oneTrackEvent,
		},
		{
			name: "a wrong key in the header is not rescued by the body",
			req: post("/v1/track", `{"writeKey":"test-key-0123456789abcdef","messageId":"g1","userId":"u1","event":"Signed Up"}`,
				withAuth(basicAuth("nope", ""))),
			status: 401, code: "invalid_write_key",
		},
		{
			name:   "a wrong key is refused before the body is read",
			req:    post("/v1/track", `{not json`, withAuth(basicAuth("nope", ""))),
			status: 401, code: "invalid_write_key",
		},
	}
}

// trackWithPad is a track call whose body is about size bytes.
func trackWithPad(id string, size int) string {
	const frame = `{"type":"track","messageId":"%s","userId":"u1","event":"Signed Up","properties":{"pad":"%s"}}`
	return fmt.Sprintf(frame, id, strings.Repeat("x", padFor(id, size)))
}

// padFor is the length of the pad that makes trackWithPad(id, size) size
// bytes long.
func padFor(id string, size int) int {
	const frame = `{"type":"track","messageId":"%s","userId":"u1","event":"Signed Up","properties":{"pad":""}}`
	return size - len(fmt.Sprintf(frame, id))
}

func limitCases() []webhookCase {
	items := make([]string, 20)
	for i := range items {
		items[i] = trackWithPad(fmt.Sprint("p", i), 26<<10)
	}
	big := make([]string, 600)
	for i := range big {
		big[i] = trackWithPad(fmt.Sprint("q", i), 1<<10)
	}
	return []webhookCase{
		{
			name:   "a single call of 32 KB is accepted",
			req:    post("/v1/track", trackWithPad("g1", 32<<10)),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "g1", CustomerID: "u1", Name: "Signed Up", Time: received,
				Properties: map[string]sdk.Value{"pad": sdk.String(strings.Repeat("x", padFor("g1", 32<<10)))}}}},
		},
		{name: "a single call over 32 KB", req: post("/v1/track", trackWithPad("g1", 32<<10+1)), status: 400, code: "request_too_large"},
		{name: "a batch over 500 KB", req: post("/v1/batch", batchOf("", items...)), status: 400, code: "request_too_large"},
		{
			name:   "a batch over 500 KB once gunzipped",
			req:    post("/v1/batch", batchOf("", big...), gzipped),
			status: 400, code: "request_too_large",
		},
		{
			name:   "a batch item over 32 KB",
			req:    post("/v1/batch", batchOf("", oneTrack, trackWithPad("g2", 33<<10))),
			status: 400, code: "message_too_large",
		},
	}
}

func malformedCases() []webhookCase {
	return []webhookCase{
		{name: "malformed JSON", req: post("/v1/track", `{"type":`), status: 400, code: "invalid_json"},
		{name: "malformed batch", req: post("/v1/batch", `{"batch":[{"type":"track",]}`), status: 400, code: "invalid_json"},
		{name: "data after the object", req: post("/v1/track", oneTrack+` {}`), status: 400, code: "invalid_json"},
		{name: "a list, not an object", req: post("/v1/track", `[`+oneTrack+`]`), status: 400, code: "invalid_json"},
		{name: "null", req: post("/v1/track", `null`), status: 400, code: "invalid_json"},
		{name: "empty body", req: post("/v1/track", ``), status: 400, code: "invalid_json"},
		{name: "batch missing", req: post("/v1/batch", `{"sentAt":"2025-06-01T11:00:00Z"}`), status: 400, code: "invalid_request"},
		{name: "batch not a list", req: post("/v1/batch", `{"batch":{"type":"track"}}`), status: 400, code: "invalid_request"},
	}
}

func identityCases() []webhookCase {
	anon := `{"messageId":"an1","anonymousId":"anon-1","event":"Signed Up"}`
	return []webhookCase{
		{
			name:     "only an anonymousId: skipped and reported by default",
			req:      post("/v1/batch", batchOf("", `{"type":"track","messageId":"an1","anonymousId":"anon-1","event":"Signed Up"}`, `{"type":"page","messageId":"an2","anonymousId":"anon-1"}`)),
			status:   200,
			problems: []string{"|userId|2 message(s) had an anonymousId but no userId"},
		},
		{
			name:   "anonymous: use takes the anonymousId as the customer id",
			config: "anonymous: use\n",
			req:    post("/v1/track", anon),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "an1", CustomerID: "anon-1", Name: "Signed Up", Time: received}}},
		},
		{
			name:   "userId wins over anonymousId",
			config: "anonymous: use\n",
			req:    post("/v1/track", `{"messageId":"an1","userId":"u1","anonymousId":"anon-1","event":"Signed Up"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "an1", CustomerID: "u1", Name: "Signed Up", Time: received}}},
		},
		{
			name:     "neither userId nor anonymousId",
			req:      post("/v1/track", `{"messageId":"n1","event":"Signed Up"}`),
			status:   200,
			problems: []string{"|userId|neither a userId nor an anonymousId"},
		},
		{
			name:     "an empty userId is no userId",
			req:      post("/v1/track", `{"messageId":"n1","userId":"  ","event":"Signed Up"}`),
			status:   200,
			problems: []string{"|userId|neither a userId nor an anonymousId"},
		},
		{
			name:   "a numeric userId",
			req:    post("/v1/track", `{"messageId":"n1","userId":42,"event":"Signed Up"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "n1", CustomerID: "42", Name: "Signed Up", Time: received}}},
		},
	}
}

func traitCases() []webhookCase {
	return []webhookCase{
		{
			name: "a trait of the wrong type is reported and only it is skipped",
			req: post("/v1/identify", `{"messageId":"w1","userId":"u1","traits":{
				"ltv":"ada@example.com","vip":3,"tags":["a",{"b":1}],"createdAt":"yesterday",
				"email":5,"plan":{"x":1},"address":{"city":null},"firstName":"Ada"}}`),
			status: 200,
			want: &sdk.Batch{Customers: []sdk.Customer{{ID: "u1", Traits: map[string]sdk.Value{
				"email": sdk.String("5"), "city": {}, "first_name": sdk.String("Ada"),
			}}}},
			problems: []string{
				"u1|ltv|traits.ltv is a string that is not a number",
				"u1|plan|traits.plan is an object, not a string",
				"u1|signed_up_at|traits.createdAt is a string that is not an ISO 8601 time",
				"u1|tags|traits.tags is a list holding an object",
				"u1|vip|traits.vip is a number, not a bool",
			},
		},
		{
			name:     "traits that are not an object",
			req:      post("/v1/identify", `{"messageId":"w1","userId":"u1","traits":"plan=pro"}`),
			status:   200,
			want:     &sdk.Batch{Customers: []sdk.Customer{{ID: "u1"}}},
			problems: []string{"u1|traits|traits is a string, not an object"},
		},
		{
			name:     "an opt-in that is not a boolean records no consent",
			req:      post("/v1/identify", `{"messageId":"w1","userId":"u1","traits":{"email_opt_in":"maybe","sms_opt_in":null}}`),
			status:   200,
			want:     &sdk.Batch{Customers: []sdk.Customer{{ID: "u1"}}},
			problems: []string{"u1|traits.email_opt_in|email consent: traits.email_opt_in is a string, not true or false"},
		},
		{
			name:   "consent trait names are configurable",
			config: "consent: {email: prefs.newsletter, sms: \"\"}\n",
			req: post("/v1/identify", `{"messageId":"w1","userId":"u1","timestamp":"2025-06-01T10:00:00Z",
				"traits":{"prefs":{"newsletter":false},"sms_opt_in":true}}`),
			status: 200,
			want: &sdk.Batch{
				Customers: []sdk.Customer{{ID: "u1"}},
				Consents:  []sdk.ConsentChange{{CustomerID: "u1", Kind: "email", Status: sdk.OptOut, Time: ts("2025-06-01T10:00:00Z"), Basis: "track identify w1"}},
			},
			problems: []string{"u1|sms_opt_in|not in the traits schema"},
		},
	}
}

func eventCases() []webhookCase {
	return []webhookCase{
		{
			name:   "value falls back to properties.value",
			req:    post("/v1/track", `{"messageId":"v1","userId":"u1","event":"Signed Up","properties":{"value":5,"total":9}}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "v1", CustomerID: "u1", Name: "Signed Up", Time: received, Value: 5, HasValue: true,
				Properties: map[string]sdk.Value{"value": sdk.Number(5), "total": sdk.Number(9)}}}},
		},
		{
			name:   "value falls back to properties.total, a numeric string",
			req:    post("/v1/track", `{"messageId":"v1","userId":"u1","event":"Signed Up","properties":{"revenue":null,"total":"12.50"}}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "v1", CustomerID: "u1", Name: "Signed Up", Time: received, Value: 12.5, HasValue: true,
				Properties: map[string]sdk.Value{"total": sdk.String("12.50")}}}},
		},
		{
			name:   "value_property overrides",
			config: "value_property: price.amount\n",
			req:    post("/v1/track", `{"messageId":"v1","userId":"u1","event":"Signed Up","properties":{"revenue":1,"price":{"amount":7}}}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "v1", CustomerID: "u1", Name: "Signed Up", Time: received, Value: 7, HasValue: true,
				Properties: map[string]sdk.Value{"revenue": sdk.Number(1), "price.amount": sdk.Number(7)}}}},
		},
		{
			name:   "a value that is not a number is reported; the event is kept",
			req:    post("/v1/track", `{"messageId":"v1","userId":"u1","event":"Signed Up","properties":{"revenue":"lots","value":3}}`),
			status: 200,
			want: &sdk.Batch{Events: []sdk.Event{{ID: "v1", CustomerID: "u1", Name: "Signed Up", Time: received,
				Properties: map[string]sdk.Value{"revenue": sdk.String("lots"), "value": sdk.Number(3)}}}},
			problems: []string{"u1|properties.revenue|kept without a value"},
		},
		{
			name:     "an unparseable timestamp: received time, reported",
			req:      post("/v1/track", `{"messageId":"t1","userId":"u1","event":"Signed Up","timestamp":"last tuesday"}`),
			status:   200,
			want:     &sdk.Batch{Events: []sdk.Event{{ID: "t1", CustomerID: "u1", Name: "Signed Up", Time: received}}},
			problems: []string{"u1|timestamp|not an ISO 8601 time"},
		},
		{
			name:     "track without an event name",
			req:      post("/v1/track", `{"messageId":"t1","userId":"u1"}`),
			status:   200,
			problems: []string{"u1|event|has no event name"},
		},
		{
			name:   "undeclared events are ingested by default",
			req:    post("/v1/track", `{"messageId":"t1","userId":"u1","event":"Clicked"}`),
			status: 200,
			want:   &sdk.Batch{Events: []sdk.Event{{ID: "t1", CustomerID: "u1", Name: "Clicked", Time: received}}},
		},
		{
			name:     "allow_unknown_events: false skips undeclared events",
			config:   "allow_unknown_events: false\n",
			req:      post("/v1/batch", batchOf("", `{"type":"track","messageId":"t1","userId":"u1","event":"Clicked"}`, `{"type":"track","messageId":"t2","userId":"u1","event":"Signed Up"}`)),
			status:   200,
			want:     &sdk.Batch{Events: []sdk.Event{{ID: "t2", CustomerID: "u1", Name: "Signed Up", Time: received}}},
			problems: []string{`u1|event|event "Clicked" is not listed under events`},
		},
	}
}

// TestWebhookRejectsCarryCORS checks that errors are JSON a browser can
// read, and that a 401 says how to authenticate.
func TestWebhookUnauthorizedHeaders(t *testing.T) {
	s, _ := newTestSource(t, baseConfig)
	resp := call(t, s, post("/v1/track", oneTrack, withAuth("")))
	if got := header(resp.Response, "WWW-Authenticate"); got != `Basic realm="cohort"` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	pre := call(t, s, post("/v1/track", "", withMethod("OPTIONS"), withAuth("")))
	for _, h := range []string{"Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
		if header(pre.Response, h) == "" {
			t.Errorf("preflight answer lacks %s", h)
		}
	}
	if !strings.Contains(header(pre.Response, "Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight does not allow the Authorization header")
	}
}

// TestUnknownTraitsReportedOncePerName checks that a trait outside the
// schema is a problem the first time its name is seen, then only counted.
func TestUnknownTraitsReportedOncePerName(t *testing.T) {
	s, logs := newTestSource(t, baseConfig)
	identify := func(id, traits string) *sdk.Batch {
		resp := call(t, s, post("/v1/identify", `{"messageId":"`+id+`","userId":"u1","traits":`+traits+`}`))
		if resp.Response.Status != 200 {
			t.Fatalf("status %d: %s", resp.Response.Status, resp.Response.Body)
		}
		return resp.Batch
	}
	b := identify("1", `{"color":"red","plan":"pro"}`)
	checkProblems(t, b.Problems, []string{"u1|color|not in the traits schema"})
	for i := range 9 {
		b = identify(fmt.Sprint("again", i), `{"color":"blue","size":"L"}`)
		if i == 0 {
			checkProblems(t, b.Problems, []string{"u1|size|not in the traits schema"})
		} else {
			checkProblems(t, b.Problems, nil)
		}
	}
	if !regexp.MustCompile(`trait not in the schema ignored.*name=color count=10\b`).MatchString(logs.String()) {
		t.Errorf("the 10th occurrence of color is not logged with its count:\n%s", logs)
	}
	// A new Configure starts counting again.
	if _, err := s.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(baseConfig)}); err != nil {
		t.Fatal(err)
	}
	b = identify("after", `{"color":"green"}`)
	checkProblems(t, b.Problems, []string{"u1|color|not in the traits schema"})
}

// TestNoPersonalDataInProblemsOrLogs sends personal data in every place a
// message can go wrong and checks that none of it is echoed.
func TestNoPersonalDataInProblemsOrLogs(t *testing.T) {
	s, logs := newTestSource(t, baseConfig+"allow_unknown_events: false\n")
	const secret = "grace.hopper@example.com"
	body := batchOf("",
		`{"type":"identify","messageId":"p1","userId":"u1","traits":{"ltv":"`+secret+`","vip":"`+secret+`","createdAt":"`+secret+`","email_opt_in":"`+secret+`"}}`,
		`{"type":"track","userId":"u1","event":"Clicked","properties":{"revenue":"`+secret+`"}}`,
		`{"type":"track","messageId":"p3","userId":"u1","event":"Signed Up","timestamp":"`+secret+`","properties":{"revenue":"`+secret+`"}}`,
		`{"type":"`+secret+`"}`,
		`{"type":"track","messageId":"p4","anonymousId":"`+secret+`","event":"Signed Up"}`,
	)
	resp := call(t, s, post("/v1/batch", body))
	if resp.Batch == nil || len(resp.Batch.Problems) < 6 {
		t.Fatalf("expected problems, got %+v", resp.Batch)
	}
	for _, p := range resp.Batch.Problems {
		if strings.Contains(p.Message, secret) || strings.Contains(p.Field, secret) {
			t.Errorf("problem quotes personal data: %+v", p)
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("logs contain personal data:\n%s", logs)
	}
	bad := call(t, s, post("/v1/track", `{"userId":"`+secret+`",`))
	if strings.Contains(string(bad.Response.Body), secret) {
		t.Errorf("error body quotes the request: %s", bad.Response.Body)
	}
}

func TestWebhookBeforeConfigure(t *testing.T) {
	s := New()
	_, err := s.Webhook(t.Context(), post("/v1/track", oneTrack))
	var e *sdk.Error
	if err == nil || !errors.As(err, &e) || e.Code != sdk.Unavailable {
		t.Fatalf("Webhook before Configure = %v, want an Unavailable error (the daemon answers 503 and the SDK retries)", err)
	}
}
