// Command twilio is the Cohort channel plugin that sends SMS through
// Twilio's Programmable Messaging API with twilio-go, one API call per
// message, and turns Twilio's status callbacks and inbound STOP replies
// into delivery events.
//
// Config:
//
//	account_sid: AC0123456789abcdef0123456789abcdef  # required
//	auth_token: ${TWILIO_AUTH_TOKEN}     # required; also checks webhook signatures; never logged
//	from: "+15555550100"                 # sender number, short code or sender ID...
//	messaging_service_sid: MG...         # ...or a messaging service: exactly one of the two
//	base_url: https://api.twilio.com     # default; point tests at plugins/twilio/twilioserver
//	parallel: 8                          # API calls in flight at once (default 8)
//	timeout: 10s                         # per API call (default 10s)
//
// Recipients must be E.164 numbers. Point the Twilio number's "a message
// comes in" webhook at <public_url>/webhooks/<instance>/inbound so STOP
// replies unsubscribe; status callbacks come to .../status by themselves.
// See internal/twiliochannel for the outcome of each Twilio answer.
package main

import (
	"github.com/cohortd/cohort/plugins/twilio/internal/twiliochannel"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithChannel(twiliochannel.New(nil))) }
