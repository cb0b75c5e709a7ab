package handler

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

var testConfig = Config{
	Defaults:      invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"},
	DefaultAction: ActionEnsureNginx,
	Name:          "nginx",
	Image:         "nginx:1.27",
	Replicas:      2,
}

var defaultRequest = Request{Action: ActionEnsureNginx, Cluster: "demo", Region: "us-east-1",
	Namespace: "default", Name: "nginx", Image: "nginx:1.27", Replicas: 2}

func TestDecodeAndResolve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		event   string
		want    Request
		wantErr string // substring of the invoke.InvalidEvent message; "" for success
	}{
		{"empty", ``, defaultRequest, ""},
		{"null", `null`, defaultRequest, ""},
		{"empty object", `{}`, defaultRequest, ""},
		{"scheduled event", `{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events",
			"account":"123456789012","time":"2026-11-22T12:00:00Z","region":"us-east-1","resources":[],"detail":{}}`, defaultRequest, ""},
		{"full event", `{"action":"ensure-nginx","cluster":"prod_1","region":"eu-west-1","namespace":"web","name":"front",
			"image":"nginx:1.27-alpine","replicas":0,"roleArn":"arn:aws:iam::210987654321:role/ops/eks-admin","externalId":"ext-42"}`,
			Request{Action: ActionEnsureNginx, Cluster: "prod_1", Region: "eu-west-1", Namespace: "web", Name: "front",
				Image: "nginx:1.27-alpine", Replicas: 0, RoleARN: "arn:aws:iam::210987654321:role/ops/eks-admin", ExternalID: "ext-42"}, ""},
		{"replicas at the limit", `{"replicas":1000}`, func() Request { r := defaultRequest; r.Replicas = 1000; return r }(), ""},

		{"unknown field", `{"replica":3}`, Request{}, `unknown field "replica"`},
		{"other EventBridge event", `{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification"}`, Request{}, "unknown field"},
		{"wrong type", `{"replicas":"3"}`, Request{}, `field "replicas" must be a JSON integer`},
		{"fraction", `{"replicas":1.5}`, Request{}, `replicas`},
		{"not an object", `[1]`, Request{}, "must be a JSON object"},
		{"broken JSON", `{"action":`, Request{}, "not valid JSON"},
		{"trailing data", `{} {}`, Request{}, "data after"},
		{"unknown action", `{"action":"explode"}`, Request{}, `unknown action "explode"`},
		{"bad namespace", `{"namespace":"Team_A"}`, Request{}, "namespace"},
		{"bad name", `{"name":"-nginx"}`, Request{}, "name"},
		{"long name", `{"name":"` + strings.Repeat("a", 64) + `"}`, Request{}, "name"},
		{"negative replicas", `{"replicas":-1}`, Request{}, "out of range"},
		{"too many replicas", `{"replicas":1001}`, Request{}, "out of range"},
		{"huge replicas", `{"replicas":99999999999}`, Request{}, "replicas"},
		{"bad cluster", `{"cluster":"my cluster"}`, Request{}, "cluster"},
		{"bad region", `{"region":"mars"}`, Request{}, "region"},
		{"bad image", `{"image":"nginx latest"}`, Request{}, "image"},
		{"bad role", `{"roleArn":"arn:aws:iam::123:user/bob"}`, Request{}, "roleArn"},
		{"external id without role", `{"externalId":"abc"}`, Request{}, "only used with roleArn"},

		// Strict decoding (issue 8): names match exactly, nothing is read twice.
		{"duplicate field", `{"action":"status","action":"delete"}`, Request{}, `duplicate field "action"`},
		{"field in another case", `{"Replicas":3}`, Request{}, `unknown field "Replicas"; field names are case-sensitive`},
		{"dryRun overridden in another case", `{"action":"restart","dryRun":true,"DRYRUN":false}`, Request{}, `unknown field "DRYRUN"`},
		{"trailing garbage", `{"action":"status"}x`, Request{}, "data after its JSON object"},
		{"trailing object", `{"action":"status"}{"action":"delete"}`, Request{}, "data after its JSON object"},
		{"not JSON", `hello`, Request{}, "must be a JSON object; it is not JSON"},
		{"a byte order mark", "\ufeff{}", Request{}, "it is not JSON"},
		{"wrong type for a boolean", `{"action":"apply","manifest":"a: b","force":"yes"}`, Request{}, `field "force" must be a JSON boolean, not string`},
		{"a string", `"{}"`, Request{}, "must be a JSON object, not a string"},
		{"a number", `3`, Request{}, "not a number"},
		{"deep nesting", `{"detail":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, Request{}, "nests deeper than 32"},
		{"brackets in strings do not count", `{"name":"` + strings.Repeat("[", 100) + `"}`, Request{}, "name"},
		{"invalid UTF-8", "{\"name\":\"a\xff\"}", Request{}, "not valid UTF-8"},
		{"non-JSON space", "\u00a0{}", Request{}, "must be a JSON object"},
		{"scheduled event with an action", `{"source":"aws.events","detail-type":"Scheduled Event","action":"delete"}`, Request{}, `unknown field "source"`},
		{"scheduled event in another case", `{"Source":"aws.events","detail-type":"Scheduled Event"}`, Request{}, "unknown field"},
		{"scheduled event with a duplicate", `{"source":"aws.events","source":"aws.events","detail-type":"Scheduled Event"}`, Request{}, "unknown field"},
		{"scheduled event with a detail", `{"source":"aws.events","detail-type":"Scheduled Event","detail":{"action":"delete"}}`, Request{}, "unknown field"},
		{"scheduled event of another source", `{"source":"aws.evil","detail-type":"Scheduled Event"}`, Request{}, "unknown field"},

		// Control characters (issue 8): refused in every name, selector and image.
		{"NUL in a selector", `{"action":"scale","selector":"app=web\u0000","replicas":0}`, Request{}, `selector "app=web\x00" has control character U+0000`},
		{"NUL in an image", `{"image":"nginx:1.27\u0000evil"}`, Request{}, "image"},
		{"NUL in a name", `{"action":"delete","kind":"ConfigMap","name":"a\u0000"}`, Request{}, "name"},
		{"escape in a namespace", `{"namespace":"default\u001b[31m"}`, Request{}, "control character U+001B"},
		{"C1 control in a cluster", `{"cluster":"demo\u0085"}`, Request{}, "cluster"},
		{"newline in a kind", `{"action":"status","kind":"Deployment\n","name":"a"}`, Request{}, "kind"},
		{"tab in a role", `{"roleArn":"arn:aws:iam::123456789012:role/a\t"}`, Request{}, "roleArn"},
		{"NUL in a wait", `{"action":"restart","wait":"1m\u0000"}`, Request{}, "wait"},
		{"NUL in a propagation", `{"action":"delete","kind":"ConfigMap","name":"a","propagation":"Foreground\u0000"}`, Request{}, "propagation"},
		{"NUL in a manifest", `{"action":"apply","manifest":"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a\u0000}\n"}`, Request{}, "manifest has control character U+0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := DecodeEvent([]byte(tt.event))
			var got Request
			if err == nil {
				got, err = Resolve(ev, testConfig)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("request (-want +got):\n%s", diff)
				}
				return
			}
			var e *invoke.Error
			if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
				t.Fatalf("err = %v, want InvalidEvent", err)
			}
			if !strings.Contains(e.Message, tt.wantErr) {
				t.Errorf("message %q lacks %q", e.Message, tt.wantErr)
			}
		})
	}
}

func TestDecodeEventTooLarge(t *testing.T) {
	t.Parallel()
	_, err := DecodeEvent([]byte(`{"name":"` + strings.Repeat("a", invoke.MaxEventBytes) + `"}`))
	var e *invoke.Error
	if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
		t.Fatalf("err = %v, want InvalidEvent", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	got, err := ConfigFromEnv(env(map[string]string{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "REPLICAS": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Defaults: invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"},
		DefaultAction: "ensure-nginx", Name: "nginx", Image: DefaultImage, Replicas: 3, MaxDocuments: 500}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	got, err = ConfigFromEnv(env(map[string]string{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "CLUSTER_REGION": "eu-west-1"}))
	if err != nil || got.Region != "eu-west-1" {
		t.Errorf("CLUSTER_REGION must win over AWS_REGION: %v %v", got.Region, err)
	}
	for _, bad := range []map[string]string{
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "REPLICAS": "many"},
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "REPLICAS": "5000"},
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "NAMESPACE": "Bad_NS"},
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "DEFAULT_ACTION": "nope"},
		{"AWS_REGION": "us-east-1", "NAMESPACE": "Bad_NS"}, // checked without a cluster too
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "IMAGE": "nginx:1.27\x00"},
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "EXTERNAL_ID": "x\n", "ROLE_ARN": "arn:aws:iam::123456789012:role/r"},
		{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "ROLE_SESSION_NAME": "has space"},
	} {
		if _, err := ConfigFromEnv(env(bad)); err == nil {
			t.Errorf("ConfigFromEnv(%v): want an error", bad)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, seed := range []string{``, `null`, `{}`, `{"replicas":3}`, `{"source":"aws.events","detail-type":"Scheduled Event"}`,
		`{"action":"ensure-nginx","namespace":"a","name":"b","image":"c","replicas":0}`, `{"x":1}`, `[]`, `{"replicas":"a"}`,
		`{"action":"apply","manifest":"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n","force":true,"wait":"1m"}`,
		`{"action":"scale","selector":"a=b","replicas":"restore","dryRun":true}`,
		`{"action":"delete","kind":"Deployment.apps","name":"x","propagation":"Foreground"}`,
		`{"action":"status","manifest":"apiVersion: v1\nkind: List\nitems: []\n"}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeEvent(data)
		if err != nil {
			var e *invoke.Error
			if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
				t.Fatalf("decode error %v is not InvalidEvent", err)
			}
			return
		}
		r, err := Resolve(ev, testConfig)
		if err != nil {
			var e *invoke.Error
			if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
				t.Fatalf("resolve error %v is not InvalidEvent", err)
			}
			return
		}
		if r.Replicas < 0 || r.Replicas > maxReplicas || r.Namespace == "" || r.Cluster == "" ||
			(r.Name == "" && r.Selector == "" && r.Objects == nil) || (r.Action == ActionApply && len(r.Objects) == 0) ||
			(r.Wait > 0 && r.DryRun) || (r.Restore && r.Action != ActionScale) {
			t.Fatalf("accepted an invalid request %+v", r)
		}
	})
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		action, name string
		ok           bool
	}{
		{ActionEnsureNginx, "nginx", true},
		{ActionEnsureNginx, "web.v2", false}, // also a label value and selector
		{ActionScale, "web.v2", true},
		{ActionRestart, "web.v2", true},
		{ActionRestart, "Web", false},
		{ActionDelete, "widgets.example.com", true},
		{ActionStatus, "system:auth-delegator", true},
		{ActionDelete, "a/b", false},
		{ActionDelete, "..", false},
		{ActionStatus, "", false},
	}
	for _, tt := range tests {
		err := checkName(tt.action, tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("checkName(%s, %q) = %v, want ok=%v", tt.action, tt.name, err, tt.ok)
		}
	}
}

// TestEventSamples decodes the samples of events/ strictly: each is an
// Event, a scheduled event, a CloudFormation request or a CodePipeline job,
// except bad.json.
func TestEventSamples(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob(filepath.Join("..", "events", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no samples in events/: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, err := os.ReadFile(path) //nolint:gosec // G304: the repository's samples
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(path)
			if strings.HasPrefix(name, "helm-") {
				t.Skip("the Helm function's sample (helmrelease tests it)")
			}
			var source struct{ Source string }
			if json.Unmarshal(b, &source) == nil && slices.Contains([]string{"aws.autoscaling", "aws.ec2", "aws.health"}, source.Source) {
				t.Skip("the lifecycle function's sample (lifecycle tests it)")
			}
			if strings.HasPrefix(name, "cfn-") {
				if !cfnresource.Is(b) {
					t.Error("not recognised as a CloudFormation request")
				}
				return
			}
			if cfnresource.Is(b) {
				t.Error("taken for a CloudFormation request")
			}
			if strings.HasPrefix(name, "codepipeline-") {
				if _, err := codepipeline.Decode(b); !codepipeline.Is(b) || err != nil {
					t.Errorf("not a CodePipeline job: %v", err)
				}
				return
			}
			ev, err := DecodeEvent(b)
			if err == nil {
				_, err = Resolve(ev, testConfig)
			}
			if name == "bad.json" {
				var e *invoke.Error
				if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
					t.Errorf("err = %v, want InvalidEvent", err)
				}
				return
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
}
