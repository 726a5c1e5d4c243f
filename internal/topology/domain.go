package topology

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanoutdev/fanout/internal/messages"
)

// JetStream opens nc's JetStream context: the account's own JetStream when
// domain is empty, or the one its account imports under the API prefix
// "$JS.<domain>.API" (the accounts layout of docs/security.md, where
// workers and clients reach the streams of the fanout account through
// service imports).
func JetStream(nc *nats.Conn, domain string, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	if domain == "" {
		return jetstream.New(nc, opts...)
	}
	if err := CheckDomain(domain); err != nil {
		return nil, err
	}
	return jetstream.NewWithDomain(nc, domain, opts...)
}

// APIPrefix is the subject prefix of JetStream API requests for domain,
// with its trailing dot: "$JS.API." or "$JS.<domain>.API.".
func APIPrefix(domain string) string {
	if domain == "" {
		return "$JS.API."
	}
	return "$JS." + domain + ".API."
}

// CheckDomain refuses a JetStream domain that is not one subject token.
func CheckDomain(domain string) error {
	if !messages.ValidToken(domain) {
		return fmt.Errorf("JetStream domain %q: must be 1-64 characters of A-Z a-z 0-9 _ - (the token of the API prefix $JS.<domain>.API)", domain)
	}
	return nil
}
