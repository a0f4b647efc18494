package twilioserver_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/cohortd/cohort/plugins/twilio/twilioserver"
)

// Made-up credentials in Twilio's shapes.
const (
	accountSID = "AC00000000000000000000000000000001"
	authToken  = "0123456789abcdef0123456789abcdef"
)

var sidPattern = regexp.MustCompile(`^SM[0-9a-f]{32}$`)

// rewrite sends every request to base instead of api.twilio.com.
type rewrite struct{ base *url.URL }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host, req.Host = r.base.Scheme, r.base.Host, ""
	return http.DefaultTransport.RoundTrip(req)
}

// api returns twilio-go's Messages API pointed at srv, logged in as sid/token.
func api(t *testing.T, srv *twilioserver.Server, sid, token string) *openapi.ApiService {
	t.Helper()
	base, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(sid, token),
		HTTPClient:  &http.Client{Transport: rewrite{base}, Timeout: 10 * time.Second},
	}
	c.SetAccountSid(sid)
	return openapi.NewApiService(&twclient.RequestHandler{Client: c})
}

func newServer(t *testing.T) *twilioserver.Server {
	t.Helper()
	srv := twilioserver.New(accountSID, authToken)
	t.Cleanup(srv.Close)
	return srv
}

func TestCreateMessageThroughTwilioGo(t *testing.T) {
	srv := newServer(t)
	params := (&openapi.CreateMessageParams{}).
		SetTo("+15555550101").SetFrom("+15555550199").SetBody("Hello Ada ✓").
		SetStatusCallback("https://cohort.example.com/webhooks/sms/status?key=row-1")
	m, err := api(t, srv, accountSID, authToken).CreateMessage(params)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	if m.Sid == nil || !sidPattern.MatchString(*m.Sid) {
		t.Fatalf("sid = %v, want SM + 32 hex digits", m.Sid)
	}
	for name, got := range map[string]*string{
		"status": m.Status, "to": m.To, "from": m.From, "body": m.Body,
		"account_sid": m.AccountSid, "direction": m.Direction, "num_segments": m.NumSegments,
	} {
		want := map[string]string{
			"status": "queued", "to": "+15555550101", "from": "+15555550199", "body": "Hello Ada ✓",
			"account_sid": accountSID, "direction": "outbound-api", "num_segments": "1",
		}[name]
		if got == nil || *got != want {
			t.Errorf("%s = %v, want %q", name, got, want)
		}
	}
	if m.DateCreated == nil {
		t.Fatal("date_created missing")
	}
	if _, err := time.Parse(time.RFC1123Z, *m.DateCreated); err != nil {
		t.Errorf("date_created %q is not RFC 2822: %v", *m.DateCreated, err)
	}

	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("server recorded %d messages, want 1", len(got))
	}
	rec := got[0]
	if rec.SID != *m.Sid || rec.To != "+15555550101" || rec.Body != "Hello Ada ✓" ||
		rec.StatusCallback != "https://cohort.example.com/webhooks/sms/status?key=row-1" {
		t.Errorf("recorded %+v", rec)
	}
	if byID, ok := srv.Message(*m.Sid); !ok || byID.SID != rec.SID {
		t.Errorf("Message(%s) = %+v, %v", *m.Sid, byID, ok)
	}
}

func TestMessagingService(t *testing.T) {
	srv := newServer(t)
	params := (&openapi.CreateMessageParams{}).
		SetTo("+15555550101").SetMessagingServiceSid("MG00000000000000000000000000000001").SetBody("hi")
	m, err := api(t, srv, accountSID, authToken).CreateMessage(params)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	if m.Status == nil || *m.Status != "accepted" {
		t.Errorf("status = %v, want accepted", m.Status)
	}
	if m.From != nil {
		t.Errorf("from = %q, want null before a sender is assigned", *m.From)
	}
	if m.MessagingServiceSid == nil || *m.MessagingServiceSid != "MG00000000000000000000000000000001" {
		t.Errorf("messaging_service_sid = %v", m.MessagingServiceSid)
	}
}

func TestErrors(t *testing.T) {
	srv := newServer(t)
	srv.Stop("+15555550110")
	srv.NotMobile("+15555550111")
	srv.Unassigned("+15555550112")
	send := func(sid, token string, p *openapi.CreateMessageParams) error {
		_, err := api(t, srv, sid, token).CreateMessage(p)
		return err
	}
	msg := func(to, body string) *openapi.CreateMessageParams {
		return (&openapi.CreateMessageParams{}).SetTo(to).SetFrom("+15555550199").SetBody(body)
	}
	tests := []struct {
		name         string
		err          error
		status, code int
	}{
		{"wrong token", send(accountSID, "wrongtoken", msg("+15555550101", "hi")), 401, 20003},
		{"other account", send(accountSID, authToken, msg("+15555550101", "hi").SetPathAccountSid("AC00000000000000000000000000000002")), 404, 20404},
		{"invalid to", send(accountSID, authToken, msg("555-0101", "hi")), 400, 21211},
		{"no to", send(accountSID, authToken, (&openapi.CreateMessageParams{}).SetFrom("+15555550199").SetBody("hi")), 400, 21604},
		{"no from", send(accountSID, authToken, (&openapi.CreateMessageParams{}).SetTo("+15555550101").SetBody("hi")), 400, 21603},
		{"no body", send(accountSID, authToken, msg("+15555550101", "")), 400, 21602},
		{"body too long", send(accountSID, authToken, msg("+15555550101", strings.Repeat("x", 1601))), 400, 21617},
		{"bad callback", send(accountSID, authToken, msg("+15555550101", "hi").SetStatusCallback("/relative")), 400, 21609},
		{"stopped", send(accountSID, authToken, msg("+15555550110", "hi")), 400, 21610},
		{"unassigned", send(accountSID, authToken, msg("+15555550112", "hi")), 400, 21211},
		{"landline", send(accountSID, authToken, msg("+15555550111", "hi")), 400, 21614},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var re *twclient.TwilioRestError
			if !errors.As(tt.err, &re) {
				t.Fatalf("error = %v, want a *TwilioRestError", tt.err)
			}
			if re.Status != tt.status || re.Code != tt.code {
				t.Errorf("status %d code %d (%s), want %d %d", re.Status, re.Code, re.Message, tt.status, tt.code)
			}
			if re.Message == "" || !strings.HasSuffix(re.MoreInfo, "/errors/"+strconv.Itoa(tt.code)) {
				t.Errorf("message %q more_info %q", re.Message, re.MoreInfo)
			}
		})
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server recorded %d messages after only errors", n)
	}
	if n := srv.Requests(); n != len(tests) {
		t.Errorf("Requests() = %d, want %d", n, len(tests))
	}
	if n := srv.PeakInFlight(); n != 1 {
		t.Errorf("PeakInFlight() = %d after sequential requests, want 1", n)
	}
}

// post sends a raw form to the Messages endpoint.
func post(ctx context.Context, srv *twilioserver.Server, form url.Values) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		srv.URL()+"/2010-04-01/Accounts/"+accountSID+"/Messages.json", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(accountSID, authToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestFaults(t *testing.T) {
	srv := newServer(t)
	srv.SetRetryAfter(1500 * time.Millisecond)
	srv.InjectFaults(twilioserver.FaultRateLimit, twilioserver.FaultInternal, twilioserver.FaultUnavailable, twilioserver.FaultDrop)
	form := url.Values{"To": {"+15555550101"}, "From": {"+15555550199"}, "Body": {"hi"}}

	for _, want := range []struct {
		status     int
		code       string
		retryAfter string
	}{{429, `"code":20429`, "2"}, {500, `"code":20500`, ""}, {503, `"code":20503`, ""}} {
		resp, body, err := post(t.Context(), srv, form)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want.status || !strings.Contains(string(body), want.code) {
			t.Errorf("got %d %s, want %d with %s", resp.StatusCode, body, want.status, want.code)
		}
		if got := resp.Header.Get("Retry-After"); got != want.retryAfter {
			t.Errorf("%d: Retry-After %q, want %q", want.status, got, want.retryAfter)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages recorded after errors", n)
	}

	// Drop: the message is kept but no answer comes.
	if resp, body, err := post(t.Context(), srv, form); err == nil {
		t.Fatalf("dropped request answered %d %s", resp.StatusCode, body)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("after a drop %d messages recorded, want 1", n)
	}
	if srv.PendingFaults() != 0 {
		t.Errorf("PendingFaults = %d, want 0", srv.PendingFaults())
	}
	// Faults are used up: the next request succeeds.
	resp, body, err := post(t.Context(), srv, form)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("after the faults: %v %v %s", err, resp, body)
	}
}

func TestLatency(t *testing.T) {
	srv := newServer(t)
	srv.SetLatency(time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	form := url.Values{"To": {"+15555550101"}, "From": {"+15555550199"}, "Body": {"hi"}}
	if _, _, err := post(ctx, srv, form); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow request: %v, want a deadline error", err)
	}
	// Accepted even though the client gave up.
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages recorded, want 1", n)
	}
}

// TestSignatureVector checks Signature against the vector in twilio-go's
// own client/request_validator_test.go.
func TestSignatureVector(t *testing.T) {
	form := url.Values{
		"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"},
		"Caller": {"+14158675309"}, "From": {"+14158675309"},
		"ReasonConferenceEnded": {"test"}, "Reason": {"Participant"},
	}
	got := twilioserver.Signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", form)
	if want := "vOEb5UThFn24KEfnOFLQY2AE5FY="; got != want {
		t.Errorf("Signature = %s, want %s", got, want)
	}
}

// receiver records the webhooks it gets and validates them with twilio-go.
type receiver struct {
	mu  sync.Mutex
	got []url.Values
	url string
	srv *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	validator := twclient.NewRequestValidator(authToken)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		full := r.srv.URL + req.URL.RequestURI()
		ok := validator.ValidateBody(full, body, req.Header.Get(twilioserver.SignatureHeader))
		form, _ := url.ParseQuery(string(body))
		r.mu.Lock()
		r.got = append(r.got, form)
		r.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	r.url = r.srv.URL
	return r
}

func (r *receiver) posts() []url.Values {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]url.Values(nil), r.got...)
}

func TestStatusCallbackSignedForTwilioGo(t *testing.T) {
	srv := newServer(t)
	rcv := newReceiver(t)
	callback := rcv.url + "/webhooks/sms/status?key=" + url.QueryEscape("row 1/ä")
	m, err := api(t, srv, accountSID, authToken).CreateMessage((&openapi.CreateMessageParams{}).
		SetTo("+15555550101").SetFrom("+15555550199").SetBody("hi").SetStatusCallback(callback))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		status string
		code   int
	}{{"sent", 0}, {"undelivered", 30003}} {
		reply, err := srv.SendStatus(t.Context(), *m.Sid, st.status, st.code)
		if err != nil {
			t.Fatal(err)
		}
		if reply.Status != http.StatusNoContent {
			t.Fatalf("%s: receiver answered %d: twilio-go's validator refused the signature", st.status, reply.Status)
		}
	}
	got := rcv.posts()
	if len(got) != 2 {
		t.Fatalf("receiver got %d callbacks, want 2", len(got))
	}
	last := got[1]
	for k, want := range map[string]string{
		"MessageSid": *m.Sid, "MessageStatus": "undelivered", "ErrorCode": "30003",
		"To": "+15555550101", "From": "+15555550199", "AccountSid": accountSID,
	} {
		if last.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, last.Get(k), want)
		}
	}
	if _, ok := got[0]["ErrorCode"]; ok {
		t.Errorf("sent callback carries ErrorCode %q", got[0].Get("ErrorCode"))
	}
	if rec, _ := srv.Message(*m.Sid); rec.Status != "undelivered" {
		t.Errorf("recorded status %q, want undelivered", rec.Status)
	}

	// A forged signature is refused by twilio-go's validator.
	reply, err := srv.PostWithSignature(t.Context(), callback, url.Values{"MessageSid": {*m.Sid}}, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != http.StatusForbidden {
		t.Errorf("forged callback answered %d, want 403", reply.Status)
	}
}

func TestInboundStopAndStart(t *testing.T) {
	srv := newServer(t)
	rcv := newReceiver(t)
	srv.SetInboundURL(rcv.url + "/webhooks/sms/inbound")
	if _, err := srv.SendInbound(t.Context(), "+15555550101", "+15555550199", "hello"); err != nil {
		t.Fatal(err)
	}
	if srv.Stopped("+15555550101") {
		t.Fatal("a plain reply opted out")
	}
	reply, err := srv.SendInbound(t.Context(), "+15555550101", "+15555550199", " stop ")
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != http.StatusNoContent {
		t.Fatalf("receiver answered %d: signature refused", reply.Status)
	}
	if !srv.Stopped("+15555550101") {
		t.Fatal("STOP did not opt out")
	}
	_, err = api(t, srv, accountSID, authToken).CreateMessage((&openapi.CreateMessageParams{}).
		SetTo("+15555550101").SetFrom("+15555550199").SetBody("hi"))
	var re *twclient.TwilioRestError
	if !errors.As(err, &re) || re.Code != 21610 {
		t.Fatalf("send after STOP: %v, want 21610", err)
	}
	if _, err := srv.SendInbound(t.Context(), "+15555550101", "+15555550199", "START"); err != nil {
		t.Fatal(err)
	}
	if srv.Stopped("+15555550101") {
		t.Fatal("START did not opt back in")
	}
	posts := rcv.posts()
	if len(posts) != 3 {
		t.Fatalf("receiver got %d inbound posts, want 3", len(posts))
	}
	if got := posts[1]; got.Get("Body") != " stop " || got.Get("From") != "+15555550101" || got.Get("OptOutType") != "STOP" {
		t.Errorf("STOP post = %v", got)
	}
	if got := posts[2].Get("OptOutType"); got != "START" {
		t.Errorf("START post OptOutType = %q", got)
	}
}

func TestInboundWithoutURL(t *testing.T) {
	srv := newServer(t)
	if _, err := srv.SendInbound(t.Context(), "+15555550101", "+15555550199", "STOP"); err == nil {
		t.Fatal("SendInbound without an inbound URL succeeded")
	}
}
