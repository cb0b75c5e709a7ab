package invoke

import (
	"runtime/debug"
	"strconv"
)

// setMemoryLimit gives the Go runtime a soft memory limit of half the
// function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE, in MB as Lambda
// counts them, 2^20 bytes), unless GOMEMLIMIT sets one. Without a limit
// the heap grows to twice what is live before a collection, and the
// transient copies of one large event took a 128 MB function past its
// size; near the limit the collector runs sooner instead. The other half
// is for what the runtime does not count (the binary's pages, thread
// stacks) and headroom: the largest events' peak RSS was 92 MiB at 5/8,
// 80 MiB at 1/2, with no measurable time added (localeks/coldstart
// TestPeakRSS). It returns the limit set, or 0.
func setMemoryLimit(getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return 0
	}
	mb, err := strconv.Atoi(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	if err != nil || mb <= 0 {
		return 0
	}
	limit := int64(mb) << 20 / 2
	debug.SetMemoryLimit(limit)
	return limit
}
