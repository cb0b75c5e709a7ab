package awsauth

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

const nodes = `- rolearn: arn:aws:iam::111122223333:role/nodes
  username: system:node:{{EC2PrivateDNSName}}
  groups:
    - system:bootstrappers
    - system:nodes
`

var fn = RoleMapping{RoleARN: "arn:aws:iam::111122223333:role/fn", Username: "lambda:{{SessionName}}", Groups: []string{"lambda-eks"}}

func entries(tb testing.TB, s string) []RoleMapping {
	tb.Helper()
	var out []RoleMapping
	if err := yaml.Unmarshal([]byte(s), &out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestMerge(t *testing.T) {
	nodeEntry := RoleMapping{RoleARN: "arn:aws:iam::111122223333:role/nodes", Username: "system:node:{{EC2PrivateDNSName}}",
		Groups: []string{"system:bootstrappers", "system:nodes"}}
	stale := fn
	stale.Groups = []string{"old"}
	staleYAML, _ := yaml.Marshal([]RoleMapping{nodeEntry, stale})
	withFn, _ := yaml.Marshal([]RoleMapping{nodeEntry, fn})

	tests := []struct {
		name        string
		in          string
		want        []RoleMapping
		wantChanged bool
	}{
		{"empty map gets the entry", "", []RoleMapping{fn}, true},
		{"others are kept, entry appended", nodes, []RoleMapping{nodeEntry, fn}, true},
		{"already there: unchanged", string(withFn), []RoleMapping{nodeEntry, fn}, false},
		{"stale entry is updated in place", string(staleYAML), []RoleMapping{nodeEntry, fn}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, err := Merge(tt.in, fn)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if diff := cmp.Diff(tt.want, entries(t, got)); diff != "" {
				t.Errorf("mapRoles (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, err := Merge("rolearn: [unclosed", fn); err == nil {
		t.Error("malformed mapRoles: want an error, not an overwrite")
	}
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: Namespace},
		Data:       map[string]string{"mapRoles": nodes, "mapUsers": "- userarn: arn:aws:iam::111122223333:user/admin\n"},
	})

	res, err := Apply(ctx, cs, fn, true)
	if err != nil || !res.Changed {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	cm, _ := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, Name, metav1.GetOptions{})
	if cm.Data["mapRoles"] != nodes {
		t.Fatal("a dry run wrote the ConfigMap")
	}

	for i, wantChanged := range []bool{true, false} {
		res, err := Apply(ctx, cs, fn, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Changed != wantChanged {
			t.Errorf("apply %d: changed = %v, want %v", i, res.Changed, wantChanged)
		}
	}
	cm, _ = cs.CoreV1().ConfigMaps(Namespace).Get(ctx, Name, metav1.GetOptions{})
	if got := len(entries(t, cm.Data["mapRoles"])); got != 2 {
		t.Errorf("mapRoles has %d entries, want the node entry and ours", got)
	}
	if cm.Data["mapUsers"] == "" {
		t.Error("mapUsers was dropped")
	}

	empty := fake.NewClientset()
	res, err = Apply(ctx, empty, fn, false)
	if err != nil || !res.Created {
		t.Fatalf("missing aws-auth: %+v %v", res, err)
	}
}
