package invoke_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// testEvent is a function's event in small: strings, an integer, a
// boolean, a nested object and a field with its own UnmarshalJSON.
type testEvent struct {
	Action   string   `json:"action,omitempty"`
	Name     string   `json:"name,omitempty"`
	Replicas *int32   `json:"replicas,omitempty"`
	Force    bool     `json:"force,omitempty"`
	Wait     waitFlag `json:"wait,omitempty"`
	Detail   *struct {
		Count int `json:"count"`
	} `json:"detail,omitempty"`
}

const testFields = "action, name, replicas, force, wait, detail"

// waitFlag accepts only "short" or "long", refusing anything else with an
// *Error of its own.
type waitFlag string

func (w *waitFlag) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil || (s != "short" && s != "long") {
		return invoke.Invalid("wait %s: want \"short\" or \"long\"", b)
	}
	*w = waitFlag(s)
	return nil
}

const testDepth = 32

// decodeTest decodes raw as a function decodes its event.
func decodeTest(raw []byte) (testEvent, error) {
	b, err := invoke.Trim(raw)
	if err != nil {
		return testEvent{}, err
	}
	if err := invoke.CheckObject(b, testDepth); err != nil {
		return testEvent{}, err
	}
	var ev testEvent
	if err := invoke.Strict(b, &ev, testFields); err != nil {
		return testEvent{}, err
	}
	return ev, nil
}

// invalidMessage returns the message of err, which must be an InvalidEvent
// *Error.
func invalidMessage(tb testing.TB, err error) string {
	tb.Helper()
	var e *invoke.Error
	if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
		tb.Fatalf("err = %v (%T), want InvalidEvent", err, err)
	}
	return e.Message
}

func TestDecode(t *testing.T) {
	three := int32(3)
	tests := []struct {
		name    string
		event   string
		want    testEvent
		wantErr string // substring of the InvalidEvent message; "" for success
	}{
		{name: "empty object", event: `{}`},
		{name: "JSON space around", event: " \t\r\n{\"name\":\"a\"}\n ", want: testEvent{Name: "a"}},
		{name: "every field", event: `{"action":"scale","name":"web","replicas":3,"force":true,"wait":"short","detail":{"count":2}}`,
			want: testEvent{Action: "scale", Name: "web", Replicas: &three, Force: true, Wait: "short",
				Detail: &struct {
					Count int `json:"count"`
				}{Count: 2}}},
		{name: "brackets in strings do not count", event: `{"name":"` + strings.Repeat("[", 100) + `\"{{"}`,
			want: testEvent{Name: strings.Repeat("[", 100) + `"{{`}},
		{name: "nesting at the limit", event: `{"detail":{"count":1}}`,
			want: testEvent{Detail: &struct {
				Count int `json:"count"`
			}{Count: 1}}},

		{name: "unknown field lists the known ones", event: `{"replica":3}`,
			wantErr: `unknown field "replica"; field names are case-sensitive; known fields: ` + testFields},
		{name: "field in another case", event: `{"Replicas":3}`, wantErr: `unknown field "Replicas"; field names are case-sensitive`},
		{name: "overridden in another case", event: `{"force":true,"FORCE":false}`, wantErr: `unknown field "FORCE"`},
		{name: "duplicate field", event: `{"action":"status","action":"delete"}`, wantErr: `duplicate field "action"`},
		{name: "many unknown fields", event: `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}`, wantErr: `unknown field "e"; and 2 more; field names`},
		{name: "unknown nested field", event: `{"detail":{"count":1,"size":2}}`, wantErr: `unknown field "detail.size"`},
		{name: "wrong type", event: `{"replicas":"3"}`, wantErr: `field "replicas" must be a JSON integer, not string`},
		{name: "fraction", event: `{"replicas":1.5}`, wantErr: `field "replicas" must be a JSON integer, not number 1.5`},
		{name: "out of int32", event: `{"replicas":99999999999}`, wantErr: `field "replicas" must be a JSON integer, not number 99999999999`},
		{name: "wrong type for a boolean", event: `{"force":"yes"}`, wantErr: `field "force" must be a JSON boolean, not string`},
		{name: "wrong type for an object", event: `{"detail":[1]}`, wantErr: `field "detail" must be a JSON object, not array`},
		{name: "wrong type in a nested object", event: `{"detail":{"count":"x"}}`, wantErr: `field "detail.count" must be a JSON integer, not string`},
		{name: "a field's own error is kept", event: `{"wait":"soon"}`, wantErr: `wait "soon": want "short" or "long"`},
		{name: "broken JSON", event: `{"action":`, wantErr: "event is not valid JSON at byte"},
		{name: "trailing garbage", event: `{"action":"status"}x`, wantErr: "event has data after its JSON object"},
		{name: "trailing object", event: `{"action":"status"}{"action":"delete"}`, wantErr: "event has data after its JSON object"},
		{name: "trailing object after a space", event: `{} {}`, wantErr: "event has data after its JSON object"},
		{name: "not JSON", event: `hello`, wantErr: "event must be a JSON object; it is not JSON"},
		{name: "a byte order mark", event: "\ufeff{}", wantErr: "event must be a JSON object; it is not JSON"},
		{name: "non-JSON space", event: "\u00a0{}", wantErr: "event must be a JSON object; it is not JSON"},
		{name: "empty", event: ``, wantErr: "event must be a JSON object, not empty"},
		{name: "only space", event: " \n", wantErr: "event must be a JSON object, not empty"},
		{name: "null", event: `null`, wantErr: "event must be a JSON object, not null"},
		{name: "an array", event: `[{}]`, wantErr: "event must be a JSON object, not an array"},
		{name: "a string", event: `"{}"`, wantErr: "event must be a JSON object, not a string"},
		{name: "a number", event: `-3`, wantErr: "event must be a JSON object, not a number"},
		{name: "a boolean", event: `true`, wantErr: "event must be a JSON object, not a boolean"},
		{name: "deep nesting", event: `{"detail":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`,
			wantErr: "event nests deeper than 32 levels"},
		{name: "one level too deep", event: strings.Repeat(`{"a":`, testDepth) + `{}` + strings.Repeat(`}`, testDepth),
			wantErr: "event nests deeper than 32 levels"},
		{name: "invalid UTF-8", event: "{\"name\":\"a\xff\"}", wantErr: "event is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeTest([]byte(tt.event))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("event (-want +got):\n%s", diff)
				}
				return
			}
			if msg := invalidMessage(t, err); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("message %q lacks %q", msg, tt.wantErr)
			}
		})
	}
}

func TestTrim(t *testing.T) {
	t.Parallel()
	atLimit := append(append([]byte(`{"name":"`), bytes.Repeat([]byte("a"), invoke.MaxEventBytes-len(`{"name":""}`))...), `"}`...)
	if got, err := invoke.Trim(atLimit); err != nil || len(got) != invoke.MaxEventBytes {
		t.Errorf("an event of %d bytes: %d bytes, %v; want it whole", len(atLimit), len(got), err)
	}
	over := append(atLimit, ' ') // even what trimming would drop counts
	_, err := invoke.Trim(over)
	want := fmt.Sprintf("event is %d bytes; at most %d are accepted", invoke.MaxEventBytes+1, invoke.MaxEventBytes)
	if msg := invalidMessage(t, err); msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	if got, err := invoke.Trim([]byte(" \t{} \r\n")); err != nil || string(got) != "{}" {
		t.Errorf("Trim = %q, %v; want {}", got, err)
	}
	if got, err := invoke.Trim([]byte("\u00a0{}\v")); err != nil || string(got) != "\u00a0{}\v" {
		t.Errorf("Trim = %q, %v; want only JSON's whitespace trimmed", got, err)
	}
}

func TestCheckDepth(t *testing.T) {
	tests := []struct {
		in    string
		limit int
		ok    bool
	}{
		{`[[[]]]`, 3, true},
		{`[[[]]]`, 2, false},
		{`[{}][{}][{}]`, 2, true}, // siblings do not add up
		{`{"a":"\"[[["}`, 1, true},
		{`{"a":"\\"}[[[`, 2, false}, // an escaped backslash does not escape the quote after it
		{`"[[[["`, 0, true},
	}
	for _, tt := range tests {
		err := invoke.CheckDepth([]byte(tt.in), tt.limit)
		if (err == nil) != tt.ok {
			t.Errorf("CheckDepth(%s, %d) = %v, want ok %v", tt.in, tt.limit, err, tt.ok)
		}
		if err != nil {
			if msg := invalidMessage(t, err); msg != fmt.Sprintf("event nests deeper than %d levels", tt.limit) {
				t.Errorf("CheckDepth(%s, %d): message %q", tt.in, tt.limit, msg)
			}
		}
	}
}

func TestCheckControls(t *testing.T) {
	tests := []struct {
		name    string
		pairs   []string
		wantErr string // the whole message; "" for none
	}{
		{name: "none", pairs: []string{"name", "web", "image", "nginx:1.27", "selector", "tier in (web,api)"}},
		{name: "non-ASCII letters are not controls", pairs: []string{"name", "ünïcode\u2028"}},
		{name: "NUL in a selector", pairs: []string{"selector", "app=web\x00"},
			wantErr: `selector "app=web\x00" has control character U+0000 at byte 7; names, selectors and images never hold one`},
		{name: "escape", pairs: []string{"namespace", "default\x1b[31m"},
			wantErr: `namespace "default\x1b[31m" has control character U+001B at byte 7; names, selectors and images never hold one`},
		{name: "newline", pairs: []string{"kind", "Deployment\n"},
			wantErr: `kind "Deployment\n" has control character U+000A at byte 10; names, selectors and images never hold one`},
		{name: "tab", pairs: []string{"roleArn", "a\tb"},
			wantErr: `roleArn "a\tb" has control character U+0009 at byte 1; names, selectors and images never hold one`},
		{name: "DEL", pairs: []string{"name", "a\x7f"},
			wantErr: `name "a\x7f" has control character U+007F at byte 1; names, selectors and images never hold one`},
		{name: "C1 control after a multi-byte letter", pairs: []string{"cluster", "dé\u0085"},
			wantErr: `cluster "dé\u0085" has control character U+0085 at byte 3; names, selectors and images never hold one`},
		{name: "the first bad pair is named", pairs: []string{"name", "ok", "image", "x\x00", "selector", "\x01"},
			wantErr: `image "x\x00" has control character U+0000 at byte 1; names, selectors and images never hold one`},
		{name: "a name without a value is ignored", pairs: []string{"name", "ok", "odd\x00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := invoke.CheckControls(tt.pairs...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckControls = %v, want nil", err)
				}
				return
			}
			if msg := invalidMessage(t, err); msg != tt.wantErr {
				t.Errorf("message %q, want %q", msg, tt.wantErr)
			}
		})
	}
}
