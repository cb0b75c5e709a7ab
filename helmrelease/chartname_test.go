package helmrelease

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestChartNameAcceptsTheSame: the chart-name pattern without its counted
// repeat, and the length checked apart, accept what the old pattern did.
func TestChartNameAcceptsTheSame(t *testing.T) {
	old := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,249}$`)
	var names []string
	for n := 0; n <= 253; n++ {
		names = append(names, "c"+strings.Repeat("-", n), "_"+strings.Repeat("a", n), "c"+strings.Repeat("a", n)+"\n")
	}
	r := rand.New(rand.NewPCG(1, 0))
	for range 3000 {
		b := make([]byte, r.IntN(20))
		for i := range b {
			b[i] = "aZ0._-/:é \n"[r.IntN(12)]
		}
		names = append(names, string(b))
	}
	for _, name := range names {
		if name == "" || strings.HasPrefix(name, "oci://") {
			continue
		}
		_, err := chartRef(Event{Chart: name, Repository: "https://charts.example.com"})
		if got, want := err == nil, old.MatchString(name); got != want {
			t.Errorf("chart %.60q (%d bytes): accepted %v, the old pattern %v (%v)", name, len(name), got, want, err)
		}
	}
}
