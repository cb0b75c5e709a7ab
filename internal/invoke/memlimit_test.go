package invoke

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	for _, tt := range []struct {
		env  map[string]string
		want int64
	}{
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}, 64 << 20},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}, 512 << 20},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "GOMEMLIMIT": "100MiB"}, 0},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "x"}, 0},
		{map[string]string{}, 0},
	} {
		debug.SetMemoryLimit(math.MaxInt64)
		got := setMemoryLimit(func(k string) string { return tt.env[k] })
		if got != tt.want {
			t.Errorf("%v: limit %d, want %d", tt.env, got, tt.want)
		}
		if now := debug.SetMemoryLimit(-1); tt.want != 0 && now != tt.want {
			t.Errorf("%v: the runtime's limit is %d, want %d", tt.env, now, tt.want)
		}
	}
}
