package security_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fanoutdev/fanout/internal/config"
	"github.com/fanoutdev/fanout/internal/messages"
	"github.com/fanoutdev/fanout/internal/security"
)

// These tests check that every credential option of the binaries
// (internal/config.Connection, the flags every binary registers) really
// authenticates against a server set up for it, that a connection without
// them is refused, and that the role's permissions then apply.

// parseConnection registers the connection flags on a fresh flag set, as
// the binaries do, and parses args.
func parseConnection(t *testing.T, args ...string) config.Connection {
	t.Helper()
	var c config.Connection
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f := config.NewFlags(fs)
	c.Register(f)
	if err := f.Parse(fs, args); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// connectWith connects with c's options and rec's error handler.
func connectWith(t *testing.T, c config.Connection, rec *recorder) (*nats.Conn, error) {
	t.Helper()
	opts, err := c.Options("test")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.MaxReconnects(0), rec.option(), nats.CustomInboxPrefix(security.Options{}.InboxPrefix(security.Worker)))
	nc, err := nats.Connect(c.URL, opts...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

// actsAsWorker checks nc holds the worker's permissions: its result
// subject is open, the submit subject is not.
func actsAsWorker(t *testing.T, nc *nats.Conn, rec *recorder) {
	t.Helper()
	n := messages.MustNames("")
	if err := nc.Publish(n.Result("b", 0), nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(n.Submit(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	rec.await(t, n.Submit())
	if v := rec.violations(); len(v) != 1 {
		t.Fatalf("violations %q, want only the one for %s", v, n.Submit())
	}
}

func refused(t *testing.T, url string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(0))...)
	if err == nil {
		nc.Close()
		t.Fatal("connected without valid credentials")
	}
}

func TestUserPasswordFlags(t *testing.T) {
	t.Parallel()
	pass := secret(t)
	conf, err := security.ServerConfig(security.Options{}, []security.User{{Role: security.Worker, Name: "worker", Password: pass}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, conf)
	rec := newRecorder()
	nc, err := connectWith(t, parseConnection(t, "-server", s.ClientURL(), "-user", "worker", "-password", pass), rec)
	if err != nil {
		t.Fatalf("-user/-password: %v", err)
	}
	actsAsWorker(t, nc, rec)
	refused(t, s.ClientURL())
	refused(t, s.ClientURL(), nats.UserInfo("worker", "not-"+pass))
}

// A password given as a variable is read by the server from its
// environment (or a variable of the configuration).
func TestPasswordVariable(t *testing.T) {
	t.Parallel()
	pass := secret(t)
	conf, err := security.ServerConfig(security.Options{}, []security.User{{Role: security.Worker, Name: "worker", PasswordVar: "WORKER_PASSWORD"}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, fmt.Sprintf("WORKER_PASSWORD: %q\n%s", pass, conf))
	rec := newRecorder()
	nc, err := connectWith(t, parseConnection(t, "-server", s.ClientURL(), "-user", "worker", "-password", pass), rec)
	if err != nil {
		t.Fatalf("password from a variable: %v", err)
	}
	actsAsWorker(t, nc, rec)
}

// A token authenticates, but it is one identity for everybody: a server
// with token authentication cannot tell roles apart.
func TestTokenFlag(t *testing.T) {
	t.Parallel()
	token := secret(t)
	s := startServer(t, fmt.Sprintf("authorization { token: %q }\n", token))
	nc, err := connectWith(t, parseConnection(t, "-server", s.ClientURL(), "-token", token), newRecorder())
	if err != nil {
		t.Fatalf("-token: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	refused(t, s.ClientURL())
	refused(t, s.ClientURL(), nats.Token("not-"+token))
}

func TestNKeySeedFlag(t *testing.T) {
	t.Parallel()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "worker.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := security.ServerConfig(security.Options{}, []security.User{{Role: security.Worker, NKey: pub}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, conf)
	rec := newRecorder()
	nc, err := connectWith(t, parseConnection(t, "-server", s.ClientURL(), "-nkey", seedFile), rec)
	if err != nil {
		t.Fatalf("-nkey: %v", err)
	}
	actsAsWorker(t, nc, rec)
	refused(t, s.ClientURL())
	other, _ := nkeys.CreateUser()
	otherPub, _ := other.PublicKey()
	refused(t, s.ClientURL(), nats.Nkey(otherPub, other.Sign))
}

// A .creds file (user JWT and nkey seed) against a server in operator
// mode; the worker's permission set travels in the JWT.
func TestCredsFlag(t *testing.T) {
	t.Parallel()
	operator, _ := nkeys.CreateOperator()
	operatorPub, _ := operator.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(operatorPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	accJWT, err := jwt.NewAccountClaims(accountPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userSeed, _ := user.Seed()
	uc := jwt.NewUserClaims(userPub)
	perms, err := security.Permissions(security.Options{})
	if err != nil {
		t.Fatal(err)
	}
	perms[security.Worker].JWT(uc)
	userJWT, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "worker.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accountPub, accJWT); err != nil {
		t.Fatal(err)
	}
	s := runServer(t, &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver,
	})
	rec := newRecorder()
	nc, err := connectWith(t, parseConnection(t, "-server", s.ClientURL(), "-creds", credsFile), rec)
	if err != nil {
		t.Fatalf("-creds: %v", err)
	}
	actsAsWorker(t, nc, rec)
	refused(t, s.ClientURL())
	refused(t, s.ClientURL(), nats.UserInfo("worker", "x"))
}

// TLS with a client certificate: -tlsca verifies the server, -tlscert and
// -tlskey identify the client, and with verify_and_map the certificate
// alone is the credential that picks the role.
func TestTLSFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t, dir)
	serverCert, serverKey := ca.issue(t, dir, "server", true)
	clientCert, clientKey := ca.issue(t, dir, "worker", false)
	strangerCA := newCA(t, t.TempDir())
	strangerCert, strangerKey := strangerCA.issue(t, t.TempDir(), "worker", false)

	conf, err := security.ServerConfig(security.Options{}, []security.User{{Role: security.Worker, CertSubject: "CN=worker"}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify_and_map: true }\n%s",
		serverCert, serverKey, ca.file, conf))
	url := s.ClientURL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("client URL %s: want tls://", url)
	}

	rec := newRecorder()
	nc, err := connectWith(t, parseConnection(t, "-server", url, "-tlsca", ca.file, "-tlscert", clientCert, "-tlskey", clientKey), rec)
	if err != nil {
		t.Fatalf("-tlsca/-tlscert/-tlskey: %v", err)
	}
	if !nc.TLSRequired() {
		t.Fatal("connection is not TLS")
	}
	actsAsWorker(t, nc, rec)

	// No client certificate, or one from another CA: refused.
	refused(t, url, nats.RootCAs(ca.file))
	refused(t, url, nats.RootCAs(ca.file), nats.ClientCert(strangerCert, strangerKey))
	// A server the CA did not sign is not trusted.
	if _, err := connectWith(t, parseConnection(t, "-server", url, "-tlsca", strangerCA.file, "-tlscert", clientCert, "-tlskey", clientKey), newRecorder()); err == nil {
		t.Fatal("connected to a server whose certificate -tlsca does not vouch for")
	}
	// A certificate without its key is refused before connecting.
	half := config.Connection{Prefix: messages.DefaultPrefix, TLSCert: clientCert}
	if err := half.Validate(); err == nil {
		t.Fatal("Validate accepted a client certificate without its key")
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fanout test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "ca.pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes a certificate and key signed by the CA and returns their files.
func (ca *testCA) issue(t *testing.T, dir, cn string, isServer bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if isServer {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
