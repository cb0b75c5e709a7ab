package coldstart

import (
	"bufio"
	"bytes"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// The main bootstrap's package init, as GODEBUG=inittrace=1 counts it:
// set from the figure measured when issue 15 was worked (2,119,600 bytes
// in 15,800 allocations, from 4,318,700 in 32,340 before: the scheme of
// every built-in API group, counted repeats in regexps), with 10% of room
// for dependency updates. The rest is kept dependencies' (the EKS SDK's
// schemas, aws-iam-authenticator's prometheus, the SDK's endpoints). Work
// here is paid by every cold start: a budget exceeded means a new package
// init or dependency to look at (GODEBUG=inittrace=1 ./bootstrap 2>&1 |
// sort -t, -k3 -n), not a number to raise without one.
const (
	initBytesBudget  = 2_330_000
	initAllocsBudget = 17_400
)

var initLine = regexp.MustCompile(`(?m)^init (\S+) @\S+ ms, \S+ ms clock, (\d+) bytes, (\d+) allocs$`)

// TestInitBudget fails when the main bootstrap's package init allocates
// more than its budget. Bytes and allocations do not depend on the
// machine's load: this checks work, not time.
func TestInitBudget(t *testing.T) {
	bin := bootstrap(t, "main")
	cmd := exec.Command(bin) //nolint:gosec // G204: the bootstrap under test
	// No runtime API: the process ends after init, which is all that is read.
	cmd.Env = append(lambdaEnv(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	type pkg struct {
		name          string
		bytes, allocs int
	}
	var pkgs []pkg
	var bytesTotal, allocsTotal int
	for _, m := range initLine.FindAllSubmatch(stderr.Bytes(), -1) {
		b, _ := strconv.Atoi(string(m[2]))
		a, _ := strconv.Atoi(string(m[3]))
		pkgs = append(pkgs, pkg{string(m[1]), b, a})
		bytesTotal += b
		allocsTotal += a
	}
	if len(pkgs) < 50 {
		t.Fatalf("%d init lines from GODEBUG=inittrace=1; output:\n%s", len(pkgs), firstLines(stderr.Bytes(), 20))
	}
	t.Logf("package init: %d bytes, %d allocations in %d packages (budget %d bytes, %d allocations)",
		bytesTotal, allocsTotal, len(pkgs), initBytesBudget, initAllocsBudget)
	if bytesTotal > initBytesBudget || allocsTotal > initAllocsBudget {
		for _, p := range pkgs {
			if p.bytes >= 20_000 {
				t.Logf("%9d bytes %6d allocs  %s", p.bytes, p.allocs, p.name)
			}
		}
		t.Errorf("the main bootstrap's package init allocates %d bytes in %d allocations: over its budget of %d bytes, %d allocations",
			bytesTotal, allocsTotal, initBytesBudget, initAllocsBudget)
	}
}

func firstLines(b []byte, n int) string {
	var out bytes.Buffer
	s := bufio.NewScanner(bytes.NewReader(b))
	for i := 0; i < n && s.Scan(); i++ {
		out.Write(s.Bytes())
		out.WriteByte('\n')
	}
	return out.String()
}
