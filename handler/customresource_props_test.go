package handler

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"

	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

func TestDecodeProperties(t *testing.T) {
	t.Parallel()
	yes, no := cfnBool(true), cfnBool(false)
	tests := []struct {
		name    string
		raw     string
		want    Properties
		wantErr string
	}{
		{name: "strings as CloudFormation passes them",
			raw:  `{"ServiceToken":"arn:aws:lambda:us-east-1:1:function:f","ServiceTimeout":"300","Manifest":"x","Force":"true","Prune":"false","Wait":"2"}`,
			want: Properties{ServiceToken: "arn:aws:lambda:us-east-1:1:function:f", ServiceTimeout: json.RawMessage(`"300"`), Manifest: "x", Force: true, Prune: &no, Wait: cfnDuration(2 * time.Second)}},
		{name: "JSON scalars", raw: `{"Manifest":"x","Force":false,"Prune":true,"Wait":90}`,
			want: Properties{Manifest: "x", Force: false, Prune: &yes, Wait: cfnDuration(90 * time.Second)}},
		{name: "duration", raw: `{"Manifest":"x","Wait":"2m30s"}`, want: Properties{Manifest: "x", Wait: cfnDuration(150 * time.Second)}},
		{name: "outputs", raw: `{"ManifestS3":"s3://b/k","Outputs":{"Host":{"Kind":"Service","Name":"web","JSONPath":"{.spec.clusterIP}"}}}`,
			want: Properties{ManifestS3: "s3://b/k", Outputs: map[string]OutputProps{"Host": {Kind: "Service", Name: "web", JSONPath: "{.spec.clusterIP}"}}}},
		{name: "unknown property", raw: `{"Manifest":"x","Manifests":"y"}`, wantErr: `unknown field "Manifests"`},
		{name: "case matters", raw: `{"manifest":"x"}`, wantErr: `unknown field "manifest"`},
		{name: "duplicate", raw: `{"Manifest":"x","Manifest":"y"}`, wantErr: `duplicate field "Manifest"`},
		{name: "unknown output field", raw: `{"Manifest":"x","Outputs":{"A":{"Kind":"Service","Name":"a","JSONPath":"{.a}","Path":"x"}}}`,
			wantErr: `unknown field "Outputs.A.Path"`},
		{name: "bad bool", raw: `{"Manifest":"x","Force":"yes"}`, wantErr: `want true or false, not "yes"`},
		{name: "bad duration", raw: `{"Manifest":"x","Wait":"soon"}`, wantErr: `want a positive duration`},
		{name: "zero duration", raw: `{"Manifest":"x","Wait":"0"}`, wantErr: `want a positive duration`},
		{name: "wrong type", raw: `{"Manifest":["x"]}`, wantErr: `property Manifest must be a string`},
		{name: "missing", raw: ``, wantErr: `Manifest or ManifestS3 is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeProperties(json.RawMessage(tt.raw), "ResourceProperties")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("properties (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveProperties(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(func(k string) string {
		return map[string]string{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1", "MAX_DOCUMENTS": "2"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	h := New(cfg, nil, discardLogger())
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
	tests := []struct {
		name      string
		props     Properties
		wantErr   string
		wantPrune bool
		wantNS    string
	}{
		{name: "defaults", props: Properties{Manifest: cm}, wantPrune: true, wantNS: "default"},
		{name: "prune off", props: Properties{Manifest: cm, Namespace: "apps", Prune: ptr.To(cfnBool(false))}, wantNS: "apps"},
		{name: "neither manifest", props: Properties{}, wantErr: "exactly one of the properties Manifest and ManifestS3"},
		{name: "both manifests", props: Properties{Manifest: cm, ManifestS3: "s3://b/k"}, wantErr: "exactly one"},
		{name: "bad S3 URI", props: Properties{ManifestS3: "https://b/k"}, wantErr: "want s3://BUCKET/KEY"},
		{name: "bad manifest names the document", props: Properties{Manifest: cm + "---\nkind: ConfigMap\nmetadata: {name: b}\n"},
			wantErr: "manifest document 2"},
		{name: "MAX_DOCUMENTS", props: Properties{Manifest: cm + "---\n" + strings.ReplaceAll(cm, "name: a", "name: b") + "---\n" + strings.ReplaceAll(cm, "name: a", "name: c")},
			wantErr: "more than 2 objects"},
		{name: "bad cluster", props: Properties{Manifest: cm, Cluster: "no such"}, wantErr: "not a valid EKS cluster name"},
		{name: "bad output", props: Properties{Manifest: cm, Outputs: map[string]OutputProps{"A": {Kind: "Service", Name: "a", JSONPath: "{.a"}}},
			wantErr: "Outputs.A.JSONPath"},
		{name: "too long", props: Properties{Manifest: cm, Wait: cfnDuration(16 * time.Minute)}, wantErr: "15-minute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := h.resolve(t.Context(), tt.props, 0)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if invoke.AsError(err).Code != invoke.InvalidEvent {
					t.Errorf("code %s, want InvalidEvent", invoke.AsError(err).Code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if spec.prune != tt.wantPrune || spec.req.Namespace != tt.wantNS || len(spec.req.Objects) != 1 {
				t.Errorf("prune %v namespace %q objects %d, want %v %q 1", spec.prune, spec.req.Namespace, len(spec.req.Objects), tt.wantPrune, tt.wantNS)
			}
		})
	}
}

func TestCheckOutputs(t *testing.T) {
	t.Parallel()
	got, err := checkOutputs(map[string]OutputProps{
		"B": {Kind: "Service", Name: "web", JSONPath: ".spec.clusterIP"},
		"A": {Kind: "Deployment.apps", Name: "web", Namespace: "other", APIVersion: "apps/v1", JSONPath: "{.status.readyReplicas}"},
	}, "apps")
	if err != nil {
		t.Fatal(err)
	}
	want := []output{
		{Name: "A", APIVersion: "apps/v1", Kind: "Deployment.apps", Namespace: "other", ObjectName: "web", JSONPath: "{.status.readyReplicas}"},
		{Name: "B", Kind: "Service", Namespace: "apps", ObjectName: "web", JSONPath: "{.spec.clusterIP}"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(output{}), cmpIgnoreParser); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	for _, bad := range []map[string]OutputProps{
		{"1a": {Kind: "Service", Name: "a", JSONPath: "{.a}"}},
		{"A": {Kind: "service", Name: "a", JSONPath: "{.a}"}},
		{"A": {Kind: "Service", Name: "", JSONPath: "{.a}"}},
		{"A": {Kind: "Service", Name: "a", JSONPath: ""}},
		{"A": {Kind: "Service", Name: "a", APIVersion: "a/b/c", JSONPath: "{.a}"}},
	} {
		if _, err := checkOutputs(bad, "default"); err == nil {
			t.Errorf("checkOutputs(%v): no error", bad)
		}
	}
}

var cmpIgnoreParser = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".parser" }, cmp.Ignore())

func TestPhysicalID(t *testing.T) {
	t.Parallel()
	stack := "arn:aws:cloudformation:us-east-1:123456789012:stack/my-stack/1c2fa620-982a-11e3-aff7-50e2416294e0"
	base := physicalID(stack, "Objects", cfnTarget{Cluster: "demo", Region: "us-east-1"})
	if !strings.HasPrefix(base, "my-stack/Objects/") || len(base) != len("my-stack/Objects/")+16 {
		t.Errorf("physicalID = %q, want my-stack/Objects/<16 hex>", base)
	}
	if again := physicalID(stack, "Objects", cfnTarget{Cluster: "demo", Region: "us-east-1"}); again != base {
		t.Errorf("not stable: %q then %q", base, again)
	}
	for name, other := range map[string]string{
		"cluster":   physicalID(stack, "Objects", cfnTarget{Cluster: "prod", Region: "us-east-1"}),
		"region":    physicalID(stack, "Objects", cfnTarget{Cluster: "demo", Region: "eu-west-1"}),
		"role":      physicalID(stack, "Objects", cfnTarget{Cluster: "demo", Region: "us-east-1", RoleARN: "arn:aws:iam::1:role/r"}),
		"logicalID": physicalID(stack, "Other", cfnTarget{Cluster: "demo", Region: "us-east-1"}),
		"stack re-created": physicalID(strings.Replace(stack, "1c2fa620", "2d3fa620", 1), "Objects",
			cfnTarget{Cluster: "demo", Region: "us-east-1"}),
	} {
		if other == base {
			t.Errorf("a changed %s keeps the ID %q", name, base)
		}
	}
	long := physicalID(stack, strings.Repeat("L", 255), cfnTarget{Cluster: strings.Repeat("c", 100)})
	if len(long) > cfnresource.MaxPhysicalIDBytes {
		t.Errorf("ID of %d bytes, want at most %d", len(long), cfnresource.MaxPhysicalIDBytes)
	}
}

// TestManifestPhysicalID: the ID stays while the target stays, and changes
// (a replacement) when the cluster does; properties that cannot be read
// leave the choice to the engine.
func TestManifestPhysicalID(t *testing.T) {
	t.Parallel()
	r := manifestResource{New(Config{Defaults: invoke.Defaults{Cluster: "demo", Region: "us-east-1"}}, nil, discardLogger())}
	stack := "arn:aws:cloudformation:us-east-1:123456789012:stack/s/u"
	idDemo := physicalID(stack, "R", cfnTarget{Cluster: "demo", Region: "us-east-1"})
	idProd := physicalID(stack, "R", cfnTarget{Cluster: "prod", Region: "us-east-1"})
	req := func(typ cfn.RequestType, phys, props, old string) cfnresource.Request {
		r := cfnresource.Request{RequestType: typ, StackID: stack, RequestID: "q", LogicalResourceID: "R", PhysicalResourceID: phys,
			ResourceProperties: json.RawMessage(props)}
		if old != "" {
			r.OldResourceProperties = json.RawMessage(old)
		}
		return r
	}
	tests := []struct {
		name    string
		req     cfnresource.Request
		want    string
		wantErr bool
	}{
		{"create", req(cfn.RequestCreate, "", `{"Manifest":"x"}`, ""), idDemo, false},
		{"create, default cluster spelt out", req(cfn.RequestCreate, "", `{"Manifest":"x","Cluster":"demo"}`, ""), idDemo, false},
		{"update, same target", req(cfn.RequestUpdate, "kept-id", `{"Manifest":"y","Namespace":"n"}`, `{"Manifest":"x"}`), "kept-id", false},
		{"update, new cluster", req(cfn.RequestUpdate, idDemo, `{"Manifest":"x","Cluster":"prod"}`, `{"Manifest":"x"}`), idProd, false},
		{"update from bad old properties: the new target's", req(cfn.RequestUpdate, idDemo, `{"Manifest":"x"}`, `{"Bad":1}`), idDemo, false},
		{"update to bad properties", req(cfn.RequestUpdate, idDemo, `{"Bad":1}`, `{"Manifest":"x"}`), "", true},
		{"create with bad properties", req(cfn.RequestCreate, "", `{"Bad":1}`, ""), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.PhysicalID(tt.req)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("PhysicalID = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPruneSet(t *testing.T) {
	t.Parallel()
	m := func(docs ...string) kube.Manifest {
		t.Helper()
		mf, err := kube.DecodeManifest([]byte(strings.Join(docs, "\n---\n")), 100)
		if err != nil {
			t.Fatal(err)
		}
		return mf
	}
	cm := func(ns, name string) string {
		s := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name
		if ns != "" {
			s += "\n  namespace: " + ns
		}
		return s
	}
	deploy := func(apiVersion, name string) string {
		return "apiVersion: " + apiVersion + "\nkind: Deployment\nmetadata:\n  name: " + name
	}
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team"
	res := func(apiVersion, kind, ns, name string) kube.ObjectResult {
		return kube.ObjectResult{APIVersion: apiVersion, Kind: kind, Namespace: ns, Name: name, Result: kube.Unchanged}
	}
	names := func(mf kube.Manifest) []string {
		var out []string
		for _, o := range mf {
			out = append(out, o.Object.GetKind()+"/"+o.Object.GetNamespace()+"/"+o.Object.GetName())
		}
		return out
	}
	tests := []struct {
		name    string
		old     kube.Manifest
		oldNS   string
		applied []kube.ObjectResult
		want    []string
	}{
		{name: "removed one, kept one, added one", old: m(cm("", "a"), cm("", "b")), oldNS: "default",
			applied: []kube.ObjectResult{res("v1", "ConfigMap", "default", "a"), res("v1", "ConfigMap", "default", "c")},
			want:    []string{"ConfigMap//b"}},
		{name: "explicit namespace equals the default", old: m(cm("default", "a")), oldNS: "other",
			applied: []kube.ObjectResult{res("v1", "ConfigMap", "default", "a")}},
		{name: "namespace default changed: the old object goes", old: m(cm("", "a")), oldNS: "old",
			applied: []kube.ObjectResult{res("v1", "ConfigMap", "new", "a")}, want: []string{"ConfigMap//a"}},
		{name: "cluster-scoped kind, default namespace changed", old: m(ns), oldNS: "old",
			applied: []kube.ObjectResult{res("v1", "Namespace", "", "team")}},
		{name: "new apiVersion of the same group is the same object", old: m(deploy("apps/v1beta1", "web")), oldNS: "default",
			applied: []kube.ObjectResult{res("apps/v1", "Deployment", "default", "web")}},
		{name: "another group is another object", old: m(deploy("apps/v1", "web")), oldNS: "default",
			applied: []kube.ObjectResult{res("example.com/v1", "Deployment", "default", "web")}, want: []string{"Deployment//web"}},
		{name: "everything removed, in manifest order", old: m(ns, cm("team", "a"), cm("", "b")), oldNS: "default",
			want: []string{"Namespace//team", "ConfigMap/team/a", "ConfigMap//b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, names(pruneSet(tt.old, tt.oldNS, tt.applied))); diff != "" {
				t.Errorf("prune set (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzProperties: no ResourceProperties, however malformed, panics the
// decoding, the ID or the checks; a refusal is always InvalidEvent, and
// what is accepted has an ID CloudFormation takes and, for a manifest in the
// properties, objects to apply.
func FuzzProperties(f *testing.F) {
	for _, seed := range []string{
		`{"Manifest":"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n","Prune":"false","Wait":"2","Outputs":{"A":{"Kind":"ConfigMap","Name":"a","JSONPath":".data.x"}}}`,
		`{"ManifestS3":"s3://b/k","Cluster":"x"}`, `null`, `{"Manifest":"kind: ["}`, `{"Manifest":7}`,
	} {
		f.Add([]byte(seed))
	}
	h := New(Config{Defaults: invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default"}, Name: "nginx",
		Image: "nginx:1.27", MaxDocuments: 10}, nil, discardLogger())
	stack := "arn:aws:cloudformation:us-east-1:123456789012:stack/fuzz/u"
	f.Fuzz(func(t *testing.T, raw []byte) {
		props, err := decodeProperties(raw, "ResourceProperties")
		if err != nil {
			if e := invoke.AsError(err); e.Code != invoke.InvalidEvent {
				t.Fatalf("decode error %v is not InvalidEvent", err)
			}
			return
		}
		id, err := manifestResource{h}.PhysicalID(cfnresource.Request{RequestType: cfn.RequestCreate, StackID: stack,
			LogicalResourceID: "L", ResourceProperties: raw})
		if err != nil || !strings.HasPrefix(id, "fuzz/L/") || len(id) > cfnresource.MaxPhysicalIDBytes {
			t.Fatalf("PhysicalID of accepted properties = %q, %v", id, err)
		}
		if props.ManifestS3 != "" {
			return
		}
		spec, err := h.resolve(t.Context(), props, 0)
		switch {
		case err != nil && invoke.AsError(err).Code != invoke.InvalidEvent:
			t.Fatalf("resolve error %v is not InvalidEvent", err)
		case err == nil && len(spec.req.Objects) == 0:
			t.Fatalf("accepted %s with no objects", raw)
		}
	})
}
