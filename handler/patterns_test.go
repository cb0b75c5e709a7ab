package handler

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The patterns used before issue 15: counted repeats such as {0,251}
// compile to that many states at package init. The lengths are now checked
// apart; these tables prove the accepted language is unchanged.
var (
	oldKindRE       = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,62}(\.[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)?$`)
	oldOutputNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,127}$`)
	oldS3URIRE      = regexp.MustCompile(`^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$`)
)

func sameLanguage(t *testing.T, name string, old *regexp.Regexp, accept func(string) bool, inputs []string) {
	t.Helper()
	for _, s := range inputs {
		if want, got := old.MatchString(s), accept(s); want != got {
			t.Errorf("%s(%.80q, %d bytes) = %v, the old pattern says %v", name, s, len(s), got, want)
		}
	}
}

// around returns prefix + n repeats of unit + suffix for n around each bound.
func around(prefix, unit, suffix string, bounds ...int) []string {
	var out []string
	for _, b := range bounds {
		for n := max(b-2, 0); n <= b+2; n++ {
			out = append(out, prefix+strings.Repeat(unit, n)+suffix)
		}
	}
	return out
}

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

func TestPatternsAcceptTheSame(t *testing.T) {
	kinds := around("W", "a", "", 61, 62, 63)
	kinds = append(kinds, around("Widget.", "b", "", 0, 1, 252, 253, 254)...)
	kinds = append(kinds, around("W.a", "-", "a", 251)...)
	kinds = append(kinds, around("W.", "a.", "", 126, 127)...)
	kinds = append(kinds, around(strings.Repeat("K", 63)+".", "x", "", 253)...)
	kinds = append(kinds, "", ".", "W.", "W.-", "W..a", "w.a", "W.A", "W.a-", "W.a.b.c", "W\n")
	kinds = append(kinds, random(1, 4000, 20, "Wa0.-Z_ \n")...)
	kinds = append(kinds, random(2, 1000, 300, "Wa0.-")...)
	sameLanguage(t, "kind", oldKindRE, validKind, kinds)

	names := around("A", "b", "", 126, 127, 128)
	names = append(names, around("A", "_", "\n", 3)...)
	names = append(names, random(3, 4000, 140, "Ab0_-. \n")...)
	sameLanguage(t, "output name", oldOutputNameRE, func(s string) bool {
		_, err := checkOutputs(map[string]OutputProps{s: {Kind: "Service", Name: "web", JSONPath: "{.spec.clusterIP}"}}, "default")
		return err == nil
	}, names)

	uris := around("s3://", "b", "/key", 0, 1, 2, 3, 61, 62, 63, 64)
	uris = append(uris, around("s3://a", "-", "a/k", 0, 1, 61, 62)...)
	uris = append(uris, around("s3://a.", "b", "/k/", 1, 60)...)
	uris = append(uris, "s3://", "s3://abc", "s3://abc/", "s3://ab-/k", "s3://-ab/k", "s3://abc/k\n", "s3://abc//", "S3://abc/k")
	for _, s := range random(4, 4000, 12, "ab.-/Z0\n") {
		uris = append(uris, "s3://"+s)
	}
	sameLanguage(t, "ManifestS3", oldS3URIRE, func(s string) bool {
		_, _, err := parseS3URI(s)
		return err == nil
	}, uris)
}
