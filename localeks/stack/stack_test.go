package stack

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPKI(t *testing.T) {
	p := Paths{Dir: t.TempDir()}
	if err := writePKI(p); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.PKI("ca.pem")))
	for _, tc := range []struct {
		name  string
		usage x509.ExtKeyUsage
		host  string
		org   []string
	}{
		{"apiserver", x509.ExtKeyUsageServerAuth, "127.0.0.1", nil},
		{"apiserver", x509.ExtKeyUsageServerAuth, "localhost", nil},
		{"authenticator", x509.ExtKeyUsageServerAuth, "127.0.0.1", nil},
		{"admin", x509.ExtKeyUsageClientAuth, "", []string{"system:masters"}},
		{controllerManagerName, x509.ExtKeyUsageClientAuth, "", nil},
		{schedulerName, x509.ExtKeyUsageClientAuth, "", nil},
		{"controllers-serving", x509.ExtKeyUsageServerAuth, "127.0.0.1", nil},
	} {
		t.Run(tc.name+" "+tc.host, func(t *testing.T) {
			cert := readCert(t, p.PKI(tc.name+".pem"))
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("verify: %v", err)
			}
			if diff := cmp.Diff(tc.org, cert.Subject.Organization); diff != "" {
				t.Errorf("organization (-want +got):\n%s", diff)
			}
			if _, err := loadKeyPair(p, tc.name); err != nil {
				t.Errorf("key pair: %v", err)
			}
		})
	}
	// The shim's CA is a different one: trusting it must not trust the cluster.
	if readCert(t, p.PKI("shim-ca.pem")).Equal(readCert(t, p.PKI("ca.pem"))) {
		t.Error("shim CA is the cluster CA")
	}
	// A second call keeps the PKI, so kubeconfigs stay valid.
	before, _ := os.ReadFile(p.PKI("ca.pem"))
	if err := writePKI(p); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p.PKI("ca.pem"))
	if !slices.Equal(before, after) {
		t.Error("writePKI replaced an existing CA")
	}
	// A PKI of an older stack gains what is missing, signed by its CA.
	if err := os.Remove(p.PKI(schedulerName + ".pem")); err != nil {
		t.Fatal(err)
	}
	if err := writePKI(p); err != nil {
		t.Fatal(err)
	}
	if _, err := readCert(t, p.PKI(schedulerName+".pem")).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("re-issued certificate: %v", err)
	}
	for _, want := range []struct{ name, cn string }{{controllerManagerName, "system:kube-controller-manager"}, {schedulerName, "system:kube-scheduler"}} {
		if got := readCert(t, p.PKI(want.name+".pem")).Subject.CommonName; got != want.cn {
			t.Errorf("%s certificate CN %q, want %q (the user bootstrap RBAC binds)", want.name, got, want.cn)
		}
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestProcessLifecycle(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	p := Paths{Dir: t.TempDir()}
	for _, d := range []string{"run", "logs"} {
		if err := os.MkdirAll(p.File(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pr, err := startProcess(p, "sleeper", []string{sleep, "60"}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	got, ok := readProc(p, "sleeper")
	if !ok {
		t.Fatal("no pidfile")
	}
	if diff := cmp.Diff(pr, got); diff != "" {
		t.Errorf("pidfile (-want +got):\n%s", diff)
	}
	if !got.alive() {
		t.Fatal("not alive after start")
	}
	// The kernel fills /proc/PID/environ only once the new program is
	// loaded, a moment after exec has closed the pipe cmd.Start waits on.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", got.PID)); err == nil && len(b) > 0 {
			break
		}
	}
	if !ownedBy(got.PID, p.Dir) || ownedBy(got.PID, p.Dir+"-other") {
		t.Error("ownership marker not as expected")
	}
	if !slices.Contains(ownedProcesses(p.Dir), got.PID) {
		t.Error("ownedProcesses misses the process")
	}
	// A recycled PID (another start time) is not ours.
	if (proc{PID: got.PID, Start: got.Start + 1}).alive() {
		t.Error("alive() ignores the start time")
	}
	start := time.Now()
	if err := got.stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if got.alive() {
		t.Error("alive after stop")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("stopping sleep took %s", took)
	}
}

func TestListeners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	port := ln.Addr().(*net.TCPAddr).Port
	if diff := cmp.Diff([]int{os.Getpid()}, listeners(port)); diff != "" {
		t.Errorf("listeners(%d) (-want +got):\n%s", port, diff)
	}
	if portFree(port) {
		t.Errorf("port %s reported free", strconv.Itoa(port))
	}
}
