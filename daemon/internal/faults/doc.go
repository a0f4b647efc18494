// Package faults holds fault-injection tests of the campaign outbox with
// real processes: the cohort binary and the sendgrid channel plugin built
// into a temporary directory, talking to the local SendGrid server
// (plugins/sendgrid/sgserver) started by the test. The daemon is SIGKILLed
// and restarted mid-campaign, the channel plugin is SIGKILLed mid-send, and
// the provider answers half the requests 429; every outbox row must end
// with exactly one outcome and the provider must never receive a message
// twice (DESIGN.md section 6).
//
// COHORT_FAULT_N sets the campaign size of the kill tests (default 2,000;
// the full run uses 20,000) and COHORT_FAULT_STORM_N that of the 429 storm
// (default 2,000; the full run uses 10,000).
package faults
