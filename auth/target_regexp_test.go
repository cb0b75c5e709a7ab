package auth

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The patterns Validate used before issue 15: counted repeats such as
// {1,512} compile to that many states (0.5 MB and 4,000 allocations at
// package init). Validate now checks the same lengths apart; these tables
// prove the accepted language is unchanged.
var (
	oldClusterNameRE = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$`)
	oldRoleARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)
	oldSessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

// sameLanguage checks that accept and old agree on every input.
func sameLanguage(t *testing.T, name string, old *regexp.Regexp, accept func(string) bool, inputs []string) {
	t.Helper()
	for _, s := range inputs {
		if want, got := old.MatchString(s), accept(s); want != got {
			t.Errorf("%s(%.80q, %d bytes) = %v, the old pattern says %v", name, s, len(s), got, want)
		}
	}
}

// around returns strings of prefix + n repeats of unit + suffix, for n
// around each length bound.
func around(prefix, unit, suffix string, bounds ...int) []string {
	var out []string
	for _, b := range bounds {
		for n := max(b-2, 0); n <= b+2; n++ {
			out = append(out, prefix+strings.Repeat(unit, n)+suffix)
		}
	}
	return out
}

// random returns n strings of up to maxLen bytes drawn from alphabet.
func random(seed uint64, n, maxLen int, alphabet string) []string {
	r := rand.New(rand.NewPCG(seed, 0))
	out := make([]string, n)
	for i := range out {
		b := make([]byte, r.IntN(maxLen+1))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		out[i] = string(b)
	}
	return out
}

func TestTargetPatternsAcceptTheSame(t *testing.T) {
	const nameChars = "aZ09_-.+=,@/: é\n"
	validRegion := func(s string) Target { return Target{Cluster: "demo", Region: "us-east-1", RoleARN: s} }

	cluster := append(around("a", "b", "", 99, 100, 0), around("_", "b", "", 99)...)
	cluster = append(cluster, around("a", "-", "\n", 99)...)
	cluster = append(cluster, random(1, 3000, 120, nameChars)...)
	cluster = append(cluster, random(2, 500, 102, "ab-_")...)
	sameLanguage(t, "cluster", oldClusterNameRE, func(s string) bool {
		return s != "" && (Target{Cluster: s, Region: "us-east-1"}).Validate() == nil
	}, cluster)

	arn := "arn:aws:iam::123456789012:role/"
	roles := around(arn, "r", "", 0, 1, 511, 512, 513)
	roles = append(roles, around(arn+"path/", "r", "", 505, 506, 507)...)
	roles = append(roles, around("arn:aws-us-gov:iam::123456789012:role/", "@", "", 512)...)
	roles = append(roles, around(arn, "r", "\n", 10)...)
	for _, s := range random(3, 3000, 40, nameChars) {
		roles = append(roles, arn+s)
	}
	roles = append(roles, random(4, 500, 60, "arn:aws-iam1234567890role/")...)
	sameLanguage(t, "roleArn", oldRoleARNRE, func(s string) bool {
		return s != "" && validRegion(s).Validate() == nil
	}, roles)

	sessions := around("", "s", "", 0, 1, 2, 64, 65)
	sessions = append(sessions, around("x", "@", "", 63)...)
	sessions = append(sessions, random(5, 3000, 70, nameChars)...)
	sessions = append(sessions, random(6, 500, 66, "ab")...)
	sameLanguage(t, "sessionName", oldSessionNameRE, func(s string) bool {
		return s != "" && (Target{Cluster: "demo", Region: "us-east-1", SessionName: s}).Validate() == nil
	}, sessions)
}
