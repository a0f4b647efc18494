// Command track is Cohort's Segment-compatible tracking source: analytics
// SDKs send identify, track, page and screen calls (and batches of them) to
// https://{public_url}/webhooks/{instance}, and they become customers,
// events and consent. The daemon starts it; see internal/tracksource for the
// mapping and the config.
package main

import (
	"github.com/cohortd/cohort/plugins/track/internal/tracksource"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithSource(tracksource.New())) }
