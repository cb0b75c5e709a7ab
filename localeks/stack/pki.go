package stack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ca is a certificate authority held in memory while the PKI is written.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// leaf describes one certificate to issue.
type leaf struct {
	commonName   string
	organization []string
	dnsNames     []string
	ips          []net.IP
	server       bool
}

// writePKI creates every key and certificate the stack needs, each once:
// the cluster CA and what it signs (apiserver serving cert, admin client
// cert, the authenticator's serving cert, the client certs of
// kube-controller-manager, kube-scheduler and kwok, and the controllers'
// serving cert), the service-account key pair, and the shim's own CA. What
// exists is kept, so that kubeconfigs stay valid; what a newer version of
// the stack needs is added to an older PKI.
func writePKI(p Paths) error {
	if err := os.MkdirAll(p.PKI(""), 0o700); err != nil {
		return err
	}
	cluster, err := loadCA(p.PKI("ca.pem"), p.PKI("ca-key.pem"))
	if errors.Is(err, os.ErrNotExist) {
		if cluster, err = newCA("localeks cluster CA"); err == nil {
			err = cluster.write(p.PKI("ca.pem"), p.PKI("ca-key.pem"))
		}
	}
	if err != nil {
		return err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	issue := []struct {
		name string
		leaf leaf
	}{
		{"apiserver", leaf{commonName: "kube-apiserver", dnsNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}, ips: append(loopback, net.IPv4(10, 0, 0, 1)), server: true}},
		{"admin", leaf{commonName: "localeks-admin", organization: []string{"system:masters"}}},
		{"authenticator", leaf{commonName: "aws-iam-authenticator", dnsNames: []string{"localhost"}, ips: loopback, server: true}},
		{"apiserver-webhook-client", leaf{commonName: "kube-apiserver-webhook-client"}},
		// The identities the apiserver's bootstrap RBAC binds, as kubeadm
		// issues them.
		{controllerManagerName, leaf{commonName: "system:kube-controller-manager"}},
		{schedulerName, leaf{commonName: "system:kube-scheduler"}},
		// kwok plays every node's kubelet: no single system:node:NAME
		// identity (which the Node authorizer wants) fits it.
		{kwokName, leaf{commonName: "kwok-controller", organization: []string{"system:masters"}}},
		{"controllers-serving", leaf{commonName: "localeks-controllers", dnsNames: []string{"localhost"}, ips: loopback, server: true}},
	}
	for _, i := range issue {
		if _, err := os.Stat(p.PKI(i.name + ".pem")); err == nil {
			continue
		}
		if err := cluster.issue(i.leaf, p.PKI(i.name+".pem"), p.PKI(i.name+"-key.pem")); err != nil {
			return fmt.Errorf("issue %s certificate: %w", i.name, err)
		}
	}
	if _, err := os.Stat(p.PKI("sa.pem")); err != nil {
		sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if err := writeKey(p.PKI("sa-key.pem"), sa); err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
		if err != nil {
			return err
		}
		if err := writeFile(p.PKI("sa.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(p.PKI("shim-ca.pem")); err != nil {
		shimCA, err := newCA("localeks shim CA")
		if err != nil {
			return err
		}
		if err := shimCA.write(p.PKI("shim-ca.pem"), p.PKI("shim-ca-key.pem")); err != nil {
			return err
		}
	}
	return nil
}

// loadCA reads a CA written by ca.write.
func loadCA(certFile, keyFile string) (*ca, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		if _, serr := os.Stat(certFile); errors.Is(serr, os.ErrNotExist) {
			return nil, serr
		}
		return nil, fmt.Errorf("load CA %s: %w", certFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key %s is not ECDSA", keyFile)
	}
	return &ca{cert: cert, key: key}, nil
}

func newCA(name string) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key}, nil
}

func (c *ca) write(certFile, keyFile string) error {
	if err := writeKey(keyFile, c.key); err != nil {
		return err
	}
	return writeCert(certFile, c.cert.Raw)
}

func (c *ca) issue(l leaf, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := serialNumber()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.commonName, Organization: l.organization},
		DNSNames:     l.dnsNames,
		IPAddresses:  l.ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if l.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return err
	}
	if err := writeKey(keyFile, key); err != nil {
		return err
	}
	return writeCert(certFile, der)
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

// writeFile writes atomically, so a crash never leaves half a key behind.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), mode)); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadKeyPair reads a PEM pair for a TLS client.
func loadKeyPair(p Paths, name string) (tls.Certificate, error) {
	return tls.LoadX509KeyPair(p.PKI(name+".pem"), p.PKI(name+"-key.pem"))
}
