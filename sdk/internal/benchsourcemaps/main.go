// Command benchsourcemaps serves the synthetic source (sdk/internal/synth)
// as a plugin that builds its batches with maps (sdk.Source's Pull only),
// for the SDK's benchmarks.
package main

import (
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/internal/synth"
)

func main() { sdk.Serve(sdk.WithSource(synth.MapsOnly{Source: &synth.Source{}})) }
