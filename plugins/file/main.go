// Command file is the Cohort channel plugin that writes every message it is
// given as one JSON line to a file, instead of sending it: the offline
// default that lets the demo run without a provider account.
//
// Config:
//
//	path: ./out/messages.jsonl   # required; created with its directories
//	kind: email                  # email (default), sms or webhook
package main

import (
	"github.com/cohortd/cohort/plugins/file/internal/filechannel"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithChannel(filechannel.New())) }
