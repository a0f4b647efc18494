// Command benchsource serves the synthetic source (sdk/internal/synth) as a
// plugin, for the SDK's benchmarks and conformance tests.
package main

import (
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/sdk/internal/synth"
)

func main() { sdk.Serve(sdk.WithSource(&synth.Source{})) }
