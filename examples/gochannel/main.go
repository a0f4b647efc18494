// Command gochannel is the smallest useful Cohort channel plugin: a
// "console" channel that logs each message to stderr and accepts it. Copy
// it to start a plugin of your own; console.go is all the logic there is.
//
// Config:
//
//	kind: email   # email (default), sms or webhook
package main

import "github.com/cohortd/cohort/sdk"

func main() { sdk.Serve(sdk.WithChannel(&console{})) }
