// Command smtp is the Cohort channel plugin (kind "email") that sends
// through an SMTP relay: one transaction per message over a pool of
// persistent connections, pipelined (RFC 2920) when the relay offers
// PIPELINING, STARTTLS or implicit TLS, AUTH PLAIN, and DKIM signing that
// covers List-Unsubscribe and List-Unsubscribe-Post (RFC 8058).
//
// Config (every key is described in internal/smtpchannel):
//
//	host: smtp.example.com
//	port: 587                    # default 587; 465 with tls: tls
//	tls: starttls                # starttls | tls | none (none: loopback or insecure: true)
//	username: cohort
//	password: ${SMTP_PASSWORD}   # AUTH PLAIN, only over TLS or to a loopback host
//	helo: mailer.example.com
//	connections: 4
//	timeout: 30s                 # per command
//	max_per_connection: 100
//	dkim:
//	  domain: example.com
//	  selector: cohort
//	  private_key_file: /etc/cohort/dkim.pem
package main

import (
	"github.com/cohortd/cohort/plugins/smtp/internal/smtpchannel"
	"github.com/cohortd/cohort/sdk"
)

func main() { sdk.Serve(sdk.WithChannel(smtpchannel.New())) }
