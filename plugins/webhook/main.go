// Command webhook is the Cohort channel plugin that POSTs each message as
// JSON to a URL, signed with HMAC-SHA256 in X-Cohort-Signature (receivers
// verify it as package webhooksig describes) and carrying the message key
// in Idempotency-Key.
//
// Config (every key is described in internal/webhookchannel):
//
//	url: https://hooks.example.com/cohort   # required
//	secret: ${COHORT_WEBHOOK_SECRET}        # required, at least 16 characters
//	headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
//	timeout: 10s
//	parallel: 8
//	kind: webhook                           # or email / sms
package main

import (
	"github.com/cohortd/cohort/plugins/webhook/internal/webhookchannel"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithChannel(webhookchannel.New())) }
