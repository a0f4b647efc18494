// Command sendgrid is the Cohort channel plugin that sends email through
// SendGrid's v3 Mail Send API with sendgrid-go, one request per message,
// and turns SendGrid's signed Event Webhook posts into delivery events. The
// daemon starts it; see internal/sendgridchannel for the config keys and
// how answers map to results.
//
// Config:
//
//	api_key: ${SENDGRID_API_KEY}   # required
//	webhook_public_key: MFkw...    # to accept the Event Webhook
package main

import (
	"github.com/cohortd/cohort/plugins/sendgrid/internal/sendgridchannel"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithChannel(sendgridchannel.New())) }
