package helmrelease

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func TestDecodeAndResolve(t *testing.T) {
	t.Parallel()
	cfg := invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"}
	for _, tc := range []struct {
		name    string
		event   string
		want    Request
		problem string // in the InvalidEvent message; "" for success
		// noRegion resolves without the configuration's region
		// (CLUSTER_REGION, AWS_REGION).
		noRegion bool
	}{
		{name: "https repository", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://charts.example.com/stable","version":"^1.2","values":{"a":{"b":1}},"wait":"5m","atomic":true}`,
			want: Request{Ref: ChartRef{Repository: "https://charts.example.com/stable", Name: "demo", Version: "^1.2"},
				Vals: map[string]any{"a": map[string]any{"b": float64(1)}}}},
		{name: "oci repository and chart", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"oci://123456789012.dkr.ecr.eu-west-1.amazonaws.com/charts/"}`,
			want: Request{Ref: ChartRef{OCI: "oci://123456789012.dkr.ecr.eu-west-1.amazonaws.com/charts/demo", Name: "demo"}}},
		{name: "whole oci reference", event: `{"action":"helm-upgrade","release":"web","chart":"oci://registry.example.com/a/b/demo","version":"1.0.0"}`,
			want: Request{Ref: ChartRef{OCI: "oci://registry.example.com/a/b/demo", Name: "demo", Version: "1.0.0"}}},
		{name: "rollback to a revision", event: `{"action":"helm-rollback","release":"web","revision":3,"wait":true}`},
		{name: "uninstall", event: `{"action":"helm-uninstall","release":"web","namespace":"apps"}`},
		{name: "no action", event: `{"release":"web"}`, problem: `"action" is required`},
		{name: "unknown action", event: `{"action":"helm-install","release":"web"}`, problem: `unknown action "helm-install"`},
		{name: "unknown field", event: `{"action":"helm-status","release":"web","valuez":{}}`, problem: `unknown field "valuez"`},
		{name: "recased field", event: `{"action":"helm-status","Release":"web"}`, problem: `unknown field "Release"`},
		{name: "repeated field", event: `{"action":"helm-status","release":"web","release":"x"}`, problem: `duplicate field "release"`},
		{name: "repeated value key", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://x.example","values":{"a":1,"a":2}}`, problem: `duplicate field "a"`},
		{name: "values not an object", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://x.example","values":"a: 1"}`, problem: `must be a JSON object`},
		{name: "values array", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://x.example","values":[1]}`, problem: `must be a JSON object`},
		{name: "trailing data", event: `{"action":"helm-status","release":"web"} {}`, problem: "event"},
		{name: "release name", event: `{"action":"helm-status","release":"Web_1"}`, problem: `release "Web_1"`},
		{name: "release too long", event: `{"action":"helm-status","release":"` + strings.Repeat("a", 54) + `"}`, problem: "at most 53"},
		{name: "plain http", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"http://x.example"}`, problem: "plain http is refused"},
		{name: "no repository", event: `{"action":"helm-upgrade","release":"web","chart":"demo"}`, problem: `"repository" is required`},
		{name: "no chart", event: `{"action":"helm-upgrade","release":"web","repository":"https://x.example"}`, problem: `"chart" is required`},
		{name: "bad version", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://x.example","version":"latest!"}`, problem: "semver constraint"},
		{name: "oci reference with a tag", event: `{"action":"helm-upgrade","release":"web","chart":"oci://r.example/demo:1.0.0"}`, problem: "oci://host/path/chart"},
		{name: "chart fields on status", event: `{"action":"helm-status","release":"web","chart":"demo"}`, problem: "for helm-upgrade only"},
		{name: "revision on upgrade", event: `{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://x.example","revision":2}`, problem: "helm-rollback only"},
		{name: "wait too long", event: `{"action":"helm-uninstall","release":"web","wait":"16m"}`, problem: "at most 15m"},
		{name: "wait a number", event: `{"action":"helm-uninstall","release":"web","wait":60}`, problem: `"wait" must be`},
		{name: "control character", event: `{"action":"helm-status","release":"web","namespace":"a\u0000"}`, problem: "control character"},
		{name: "bad namespace", event: `{"action":"helm-status","release":"web","namespace":"A"}`, problem: `namespace "A"`},
		{name: "not an object", event: `[]`, problem: "JSON object"},
		// The target's checks are every function's (auth.Target.Validate),
		// with its messages.
		{name: "region of the event", event: `{"action":"helm-status","release":"web","region":"eu-west-3"}`,
			want: Request{Target: auth.Target{Cluster: "demo", Region: "eu-west-3"}}},
		{name: "region numbered beyond 9", event: `{"action":"helm-status","release":"web","region":"ap-southeast-10"}`,
			want: Request{Target: auth.Target{Cluster: "demo", Region: "ap-southeast-10"}}},
		{name: "region of the event without a default", event: `{"action":"helm-status","release":"web","region":"us-west-2"}`, noRegion: true,
			want: Request{Target: auth.Target{Cluster: "demo", Region: "us-west-2"}}},
		{name: "no region", event: `{"action":"helm-status","release":"web"}`, noRegion: true, problem: "no region: set CLUSTER_REGION or AWS_REGION, or the event's region"},
		{name: "bad region", event: `{"action":"helm-status","release":"web","region":"us-east"}`, problem: `region "us-east" is not an AWS region name`},
		{name: "region in capitals", event: `{"action":"helm-status","release":"web","region":"US-EAST-1"}`, problem: "is not an AWS region name"},
		{name: "bad cluster", event: `{"action":"helm-status","release":"web","cluster":"-x"}`, problem: `cluster "-x" is not a valid EKS cluster name`},
		{name: "role and external id", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:iam::210987654321:role/ops/eks-ops","externalId":"tenant-1:a/b@c=d,e.f+g"}`,
			want: Request{Target: auth.Target{Cluster: "demo", Region: "us-east-1", RoleARN: "arn:aws:iam::210987654321:role/ops/eks-ops", ExternalID: "tenant-1:a/b@c=d,e.f+g"}}},
		{name: "role without external id", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws-cn:iam::210987654321:role/eks-ops"}`,
			want: Request{Target: auth.Target{Cluster: "demo", Region: "us-east-1", RoleARN: "arn:aws-cn:iam::210987654321:role/eks-ops"}}},
		{name: "user for a role", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:iam::210987654321:user/ops"}`,
			problem: `roleArn "arn:aws:iam::210987654321:user/ops" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`},
		{name: "assumed role for a role", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:sts::210987654321:assumed-role/ops/s"}`, problem: "is not an IAM role ARN"},
		{name: "external id without role", event: `{"action":"helm-status","release":"web","externalId":"tenant-1"}`, problem: "externalId is only used with roleArn"},
		{name: "external id too short", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:iam::210987654321:role/eks-ops","externalId":"a"}`,
			problem: "externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-"},
		{name: "external id too long", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:iam::210987654321:role/eks-ops","externalId":"` + strings.Repeat("a", 1225) + `"}`,
			problem: "externalId must be 2 to 1224 characters"},
		{name: "external id of 1224", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:iam::210987654321:role/eks-ops","externalId":"` + strings.Repeat("a", 1224) + `"}`,
			want: Request{Target: auth.Target{Cluster: "demo", Region: "us-east-1", RoleARN: "arn:aws:iam::210987654321:role/eks-ops", ExternalID: strings.Repeat("a", 1224)}}},
		{name: "external id with a space", event: `{"action":"helm-status","release":"web","roleArn":"arn:aws:iam::210987654321:role/eks-ops","externalId":"a b"}`,
			problem: "externalId must be 2 to 1224 characters"},
		{name: "deep", event: `{"action":"helm-upgrade","release":"web","values":` + strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70) + `}`, problem: "deeper"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := DecodeEvent([]byte(tc.event))
			var req Request
			if err == nil {
				c := cfg
				if tc.noRegion {
					c.Region = ""
				}
				req, err = Resolve(ev, c)
			}
			if tc.problem != "" {
				mustInvalid(t, err, tc.problem)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want.Ref, req.Ref); diff != "" {
				t.Errorf("chart (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want.Vals, req.Vals); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
			want := tc.want.Target
			if want == (auth.Target{}) {
				want = auth.Target{Cluster: "demo", Region: "us-east-1"}
			}
			want.SessionName = cfg.SessionName
			if req.Target != want {
				t.Errorf("target %+v, want %+v", req.Target, want)
			}
		})
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Wait
	}{
		{`true`, Wait{On: true}}, {`false`, Wait{}}, {`"1m30s"`, Wait{On: true, Max: 90 * time.Second}},
	} {
		var w Wait
		if err := w.UnmarshalJSON([]byte(tc.in)); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if w != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, w, tc.want)
		}
		b, err := w.MarshalJSON()
		if err != nil || string(b) != tc.in {
			t.Errorf("%+v marshals to %s, %v; want %s", w, b, err, tc.in)
		}
	}
}

func TestParseCredentials(t *testing.T) {
	t.Parallel()
	c, err := ParseCredentials(`{"127.0.0.1:5000":"helm:pa:ss","registry.example.com":"u:p"}`)
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{"127.0.0.1:5000": {"helm", "pa:ss"}, "registry.example.com": {"u", "p"}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{`[]`, `{"h":"nocolon"}`, `{"https://h":"u:p"}`, `{"h":":p"}`} {
		if _, err := ParseCredentials(bad); err == nil {
			t.Errorf("%s: no error", bad)
		} else if strings.Contains(err.Error(), "p\"") {
			t.Errorf("%s: the error shows the password: %v", bad, err)
		}
	}
}

func TestECRRegion(t *testing.T) {
	t.Parallel()
	e := NewECRTokens(awsConfig("eu-central-1"), []string{"127.0.0.1:5000", "proxy.example.com"})
	for host, want := range map[string]string{
		"123456789012.dkr.ecr.us-west-2.amazonaws.com":          "us-west-2",
		"123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com": "us-gov-west-1",
		"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn":      "cn-north-1",
		"127.0.0.1:5000":       "eu-central-1",
		"proxy.example.com":    "eu-central-1",
		"registry.example.com": "",
		"123456789012.dkr.ecr.us-west-2.amazonaws.com.evil": "",
		"x123456789012.dkr.ecr.us-west-2.amazonaws.com":     "",
	} {
		if got := e.region(host); got != want {
			t.Errorf("%s: region %q, want %q", host, got, want)
		}
	}
}

// The Helm function reads the defaults every function reads and its own
// registries' settings; the main function's settings (REPLICAS, IMAGE,
// DEFAULT_ACTION, MAX_DOCUMENTS) are none of its business, even when they
// would be refused there.
func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	cfg, err := ConfigFromEnv(env(map[string]string{
		"CLUSTER_NAME": "demo", "AWS_REGION": "eu-west-1", "REPLICAS": "many", "IMAGE": "", "DEFAULT_ACTION": "bogus", "MAX_DOCUMENTS": "-1",
		"REGISTRY_CREDENTIALS": `{"registry.example.com":"u:p"}`, "ECR_REGISTRIES": " 127.0.0.1:5000, ,proxy.example.com",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Defaults:      invoke.Defaults{Cluster: "demo", Region: "eu-west-1", Namespace: "default", SessionName: invoke.DefaultSessionName},
		Credentials:   Credentials{"registry.example.com": {"u", "p"}},
		ECRRegistries: []string{"127.0.0.1:5000", "proxy.example.com"},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for name, kv := range map[string]map[string]string{
		"bad credentials": {"AWS_REGION": "eu-west-1", "REGISTRY_CREDENTIALS": `{"h":"nocolon"}`},
		"bad region":      {"CLUSTER_REGION": "Europe"},
		"bad role":        {"AWS_REGION": "eu-west-1", "ROLE_ARN": "arn:aws:iam::1:user/x"},
	} {
		if _, err := ConfigFromEnv(env(kv)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// mustInvalid fails tb unless err is an InvalidEvent *invoke.Error whose
// message says says.
func mustInvalid(tb testing.TB, err error, says string) {
	tb.Helper()
	var e *invoke.Error
	if !errors.As(err, &e) || e.Code != invoke.InvalidEvent || !strings.Contains(e.Message, says) {
		tb.Fatalf("got %v, want InvalidEvent saying %q", err, says)
	}
}
