// Package awsauth merges one role mapping into the aws-auth ConfigMap of a
// cluster that still authenticates through it. It never replaces the map:
// every other entry is kept, and the write is conditional on the version
// read, so a concurrent edit is retried, not overwritten.
package awsauth

import (
	"context"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

// Namespace and Name locate the ConfigMap.
const (
	Namespace = "kube-system"
	Name      = "aws-auth"
)

// RoleMapping is one mapRoles entry.
type RoleMapping struct {
	RoleARN  string   `json:"rolearn"`
	Username string   `json:"username"`
	Groups   []string `json:"groups"`
}

// Merge returns mapRoles with m in it: the entry for m.RoleARN is added, or
// its username and groups set, and every other entry is left as it was.
// changed is false when mapRoles already held m.
func Merge(mapRoles string, m RoleMapping) (merged string, changed bool, err error) {
	var entries []map[string]any
	if err := yaml.Unmarshal([]byte(mapRoles), &entries); err != nil {
		return "", false, fmt.Errorf("parse mapRoles: %w", err)
	}
	groups := make([]any, len(m.Groups))
	for i, g := range m.Groups {
		groups[i] = g
	}
	want := map[string]any{"rolearn": m.RoleARN, "username": m.Username, "groups": groups}
	found := false
	for i, e := range entries {
		if e["rolearn"] != m.RoleARN {
			continue
		}
		found = true
		if e["username"] == want["username"] && reflect.DeepEqual(e["groups"], want["groups"]) {
			return mapRoles, false, nil
		}
		e["username"], e["groups"] = want["username"], want["groups"]
		entries[i] = e
	}
	if !found {
		entries = append(entries, want)
	}
	out, err := yaml.Marshal(entries)
	if err != nil {
		return "", false, fmt.Errorf("write mapRoles: %w", err)
	}
	return string(out), true, nil
}

// Result says what Apply did or, on a dry run, would do.
type Result struct {
	Changed  bool
	Created  bool
	MapRoles string // the mapRoles written, or that would be written
}

// Apply merges m into the cluster's aws-auth ConfigMap, creating the map if
// the cluster has none. With dryRun it reads but does not write.
func Apply(ctx context.Context, cs kubernetes.Interface, m RoleMapping, dryRun bool) (Result, error) {
	var res Result
	cms := cs.CoreV1().ConfigMaps(Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		res = Result{}
		cm, err := cms.Get(ctx, Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			merged, _, err := Merge("", m)
			if err != nil {
				return err
			}
			res = Result{Changed: true, Created: true, MapRoles: merged}
			if dryRun {
				return nil
			}
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: Namespace},
				Data:       map[string]string{"mapRoles": merged},
			}, metav1.CreateOptions{FieldManager: "lambda-eks-deploy"})
			return err
		}
		if err != nil {
			return err
		}
		merged, changed, err := Merge(cm.Data["mapRoles"], m)
		if err != nil {
			return err
		}
		res = Result{Changed: changed, MapRoles: merged}
		if !changed || dryRun {
			return nil
		}
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data["mapRoles"] = merged
		// Update carries the resourceVersion read above: a concurrent
		// edit makes it fail with a conflict, and the merge is redone.
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "lambda-eks-deploy"})
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("merge into %s/%s: %w", Namespace, Name, err)
	}
	return res, nil
}
