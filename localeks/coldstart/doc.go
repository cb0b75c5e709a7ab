// Package coldstart measures what a cold start and a large event cost the
// functions' bootstraps, without the local EKS replica: each bootstrap
// against a loopback fake of the Lambda runtime API, of EKS and of a
// Kubernetes API server (issue 15).
//
//   - BenchmarkColdStart times, interleaved in one run, the main bootstrap,
//     the Helm bootstrap and a bare aws-lambda-go bootstrap (../cmd/bare)
//     from exec to their first request for an event, and the main and bare
//     ones to their first answer; it reports the medians and their ratios
//     to the bare one.
//
//   - TestInitBudget fails when the main bootstrap's package init (the bytes
//     and allocations GODEBUG=inittrace=1 reports, which do not depend on
//     the machine's load) grows past its budget.
//
//   - TestPeakRSS sends the largest accepted and refused events to one warm
//     main bootstrap under aws-lambda-rie and checks its peak RSS (VmHWM).
//
//     cd localeks && GOWORK=off go test -run '^$' -bench ColdStart ./coldstart/
//     cd localeks && GOWORK=off LOCALEKS_RIE=... go test -run 'InitBudget|PeakRSS' -v ./coldstart/
package coldstart
