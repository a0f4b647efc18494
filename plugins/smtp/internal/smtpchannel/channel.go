// Package smtpchannel is the SMTP channel (kind "email"): it sends each
// message as one SMTP transaction (MAIL, RCPT, DATA) over a pool of
// persistent connections to a relay, optionally DKIM-signed. With a relay
// that offers PIPELINING (RFC 2920) a transaction is two writes: MAIL,
// RCPT and DATA together, then the content with its terminator.
//
// Config keys (see the plugin's main package for an example):
//
//	host                relay host name or IP (required)
//	port                default 587; 465 with tls: tls
//	tls                 starttls (default) | tls (TLS from the first byte) | none;
//	                    none only for a loopback host (localhost, 127.0.0.0/8, ::1)
//	                    or with insecure: true
//	insecure            allow tls: none to a non-loopback host (a trusted network)
//	ca_file             PEM CA certificates trusted besides the system roots
//	username, password  AUTH PLAIN; only over TLS or to a loopback host
//	                    (insecure does not lift this)
//	helo                EHLO name (default: the host name if fully qualified,
//	                    else localhost)
//	connections         persistent connections (default 4, at most 100)
//	timeout             per SMTP command and per write (default 30s)
//	max_per_connection  messages before a connection is renewed (default 100)
//	dkim:               sign every message (github.com/emersion/go-msgauth/dkim,
//	                    relaxed/relaxed, SHA-256)
//	  domain            d= (usually the From domain, for DMARC alignment)
//	  selector          s=: the key is at <selector>._domainkey.<domain>
//	  private_key_file  PEM RSA (PKCS #1 or #8) or Ed25519 (PKCS #8) key
//	  headers           signed fields; default From, To, Subject, Date,
//	                    Message-ID, Reply-To, List-Unsubscribe,
//	                    List-Unsubscribe-Post (RFC 8058 needs the last two)
//
// Outcomes per message: 250 after DATA is accepted, with the queue id from
// the reply ("queued as X", "id=X", sendmail's "X Message accepted") or
// else the Message-ID as provider id; 550/551/553 with a 5.1.x enhanced
// code on RCPT (no such mailbox) is suppress; any other 5xx is permanent;
// 4xx is retryable after 30s, and so is 530 (the relay wants AUTH: a
// config problem, not the message's); a connection that fails before the DATA
// terminator is sent is retryable; a connection lost or timed out after the
// terminator left and before its reply is unknown: the relay may have the
// message. A reused idle connection that turns out closed before MAIL is
// replaced once, transparently, since nothing was sent on it.
package smtpchannel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/cohortd/cohort/sdk"
)

// Version is the plugin's version, reported in ChannelInfo.
const Version = "0.1.0"

const (
	// maxBatch is the most messages accepted in one Send.
	maxBatch = 100
	// retryAfter is the pause asked for after a temporary failure.
	retryAfter = 30 * time.Second
)

// state is one Configure's settings and connection pool.
type state struct {
	s    *settings
	pool *pool
	sign *dkimSigning
}

// Channel is the SMTP channel. Configure it before Send.
type Channel struct {
	now func() time.Time

	mu sync.Mutex
	st *state
}

var _ sdk.Channel = (*Channel)(nil)

// New returns an unconfigured SMTP channel.
func New() *Channel { return &Channel{now: time.Now} }

// Configure checks the config (reading the CA and DKIM key files, with no
// network call) and replaces the connection pool. A second Configure
// replaces the first; sends in flight finish on the old pool.
func (c *Channel) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ChannelInfo, error) {
	s, err := parseConfig(req.Config)
	if err != nil {
		return sdk.ChannelInfo{}, err
	}
	st := &state{s: s, pool: newPool(s)}
	if d := s.DKIM; d != nil {
		st.sign = &dkimSigning{opts: dkim.SignOptions{
			Domain:                 d.Domain,
			Selector:               d.Selector,
			Signer:                 s.dkimKey,
			HeaderKeys:             d.Headers,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		}}
		if _, err := dkim.NewSigner(&st.sign.opts); err != nil {
			return sdk.ChannelInfo{}, sdk.Errorf(sdk.InvalidConfig, "dkim", "dkim: %v", err)
		}
	}
	c.mu.Lock()
	old := c.st
	c.st = st
	c.mu.Unlock()
	if old != nil {
		go old.pool.close() // QUIT may take up to the timeout per connection
	}
	return sdk.ChannelInfo{Name: "smtp", Version: Version, Kind: "email", MaxBatch: maxBatch}, nil
}

// Close closes the idle connections.
func (c *Channel) Close() error {
	c.mu.Lock()
	st := c.st
	c.st = nil
	c.mu.Unlock()
	if st != nil {
		st.pool.close()
	}
	return nil
}

// Send sends each message in its own transaction, up to connections at a
// time. A message's failure never affects the others. If ctx ends before
// any message reached the relay, Send returns ctx's error; once one did,
// the messages not yet started are retryable.
func (c *Channel) Send(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	if st == nil {
		return nil, sdk.Errorf(sdk.Internal, "", "smtp channel: Send before Configure")
	}
	now := c.now()
	results := make([]sdk.Result, len(msgs))
	touched := make([]bool, len(msgs))
	// Each worker keeps the connection it got for the messages it takes,
	// so a Send hands connections around once, not once per message.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(msgs), st.s.Connections) {
		wg.Go(func() {
			var b builder
			var cn *conn
			for {
				i := int(next.Add(1)) - 1
				if i >= len(msgs) {
					break
				}
				results[i], touched[i] = st.sendOne(ctx, &b, &cn, &msgs[i], now)
			}
			if cn != nil {
				st.pool.put(cn, true)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		any := false
		for _, t := range touched {
			any = any || t
		}
		if !any {
			return nil, err
		}
	}
	return results, nil
}

func retryable(key, reason string, after time.Duration) sdk.Result {
	return sdk.Result{Key: key, Status: sdk.Retryable, Reason: reason, RetryAfter: after}
}

// sendOne sends one message on *held, or on a connection from the pool
// that it leaves in *held while it can carry more. touched says whether
// any of the message reached the relay (a MAIL command at least).
func (st *state) sendOne(ctx context.Context, b *builder, held **conn, m *sdk.Message, now time.Time) (sdk.Result, bool) {
	if err := ctx.Err(); err != nil {
		return retryable(m.Key, "not sent: "+err.Error(), 0), false
	}
	env, err := b.build(m, now, st.sign)
	if err != nil {
		// A message that cannot be built can never be sent.
		return sdk.Result{Key: m.Key, Status: sdk.Permanent, Reason: err.Error()}, false
	}
	for attempt := 0; ; attempt++ {
		cn := *held
		if cn != nil {
			cn.reused = true // it carried the previous message
		} else {
			cn, err = st.pool.get(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return retryable(m.Key, "not sent: "+err.Error(), 0), false
				}
				return retryable(m.Key, "not sent: "+err.Error(), retryAfter), false
			}
		}
		tx := transact(ctx, cn, env)
		if tx.healthy && cn.sent < st.s.MaxPerConnection {
			*held = cn
		} else {
			*held = nil
			st.pool.put(cn, tx.healthy)
		}
		if tx.stale && cn.reused && attempt == 0 && ctx.Err() == nil {
			continue // an idle connection the relay had closed: nothing was sent
		}
		tx.result.Key = m.Key
		return tx.result, tx.touched
	}
}

// txResult is the outcome of one transaction.
type txResult struct {
	result  sdk.Result
	healthy bool // the connection can carry another transaction
	stale   bool // the connection was dead before MAIL got an answer
	touched bool // a command reached the relay
}

// transact runs MAIL, RCPT and DATA on cn. ctx closes the connection.
func transact(ctx context.Context, cn *conn, env *envelope) txResult {
	stop := context.AfterFunc(ctx, func() { _ = cn.raw.Close() })
	tx := transactOn(cn, env)
	if !stop() {
		tx.healthy = false
	}
	if ctx.Err() != nil && tx.result.Status == sdk.Retryable {
		tx.result.RetryAfter = 0
		tx.result.Reason += " (" + ctx.Err().Error() + ")"
	}
	return tx
}

func transactOn(cn *conn, env *envelope) txResult {
	c := cn.c
	cn.sent++
	if env.utf8 && !c.has("SMTPUTF8") {
		return txResult{healthy: true, result: sdk.Result{Status: sdk.Permanent,
			Reason: fmt.Sprintf("address <%s> or <%s> is not ASCII and the relay does not offer SMTPUTF8", env.from, env.to)}}
	}
	if strings.ContainsAny(env.from, "\r\n") || strings.ContainsAny(env.to, "\r\n") {
		// The builder refuses such addresses; a command must never carry one.
		return txResult{healthy: true, result: sdk.Result{Status: sdk.Permanent,
			Reason: fmt.Sprintf("address %q or %q has a line break", env.from, env.to)}}
	}
	at, err, broken := c.open(env.from, env.to, env.utf8)
	var tx txResult
	switch at {
	case stageMail:
		tx = failed("MAIL FROM <"+env.from+">", err, false)
		// A connection the relay closed while it sat idle fails at once (EOF,
		// reset) or answers 421; a timeout is not staleness.
		var ne net.Error
		tx.stale = isCode(err, 421) || !isReply(err) && !(errors.As(err, &ne) && ne.Timeout())
	case stageRcpt:
		tx = failed("RCPT TO <"+env.to+">", err, true)
	case stageData:
		tx = failed("DATA", err, false)
	}
	if at != stageNone {
		if broken {
			tx.healthy = false
		}
		if at != stageMail {
			tx = reset(c, tx)
		}
		return tx
	}
	text, sent, err := c.finish(env.data)
	if err != nil {
		switch {
		case isReply(err):
			return failed("end of DATA", err, false)
		case !sent:
			// The terminator did not leave: the relay cannot have taken it.
			return txResult{touched: true, result: retryable("", "connection failed before the end of the message was sent: "+err.Error(), retryAfter)}
		default:
			return txResult{touched: true, result: sdk.Result{Status: sdk.OutcomeUnknown,
				Reason: "no reply after the message was sent (the relay may have it): " + err.Error()}}
		}
	}
	id := queueID(text)
	if id == "" {
		id = env.messageID
	}
	return txResult{healthy: true, touched: true, result: sdk.Result{Status: sdk.Accepted, ProviderID: id}}
}

// reset aborts an open transaction with RSET; a connection that cannot
// is not reused.
func reset(c *client, tx txResult) txResult {
	if tx.healthy {
		if err := c.reset(); err != nil {
			tx.healthy = false
		}
	}
	return tx
}

// failed classifies the error of an SMTP command. rcpt says it answered
// RCPT, where 5.1.x means the mailbox does not exist.
func failed(cmd string, err error, rcpt bool) txResult {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return txResult{touched: true, result: retryable("", cmd+": connection failed: "+err.Error(), retryAfter)}
	}
	reply := formatReply(se)
	code := fmt.Sprint(se.Code)
	tx := txResult{touched: true, healthy: se.Code != 421}
	switch {
	case se.Code == 530:
		// The relay wants AUTH: a config problem, not the message's.
		tx.result = sdk.Result{Status: sdk.Retryable, Reason: cmd + ": " + reply + ": the relay requires authentication; set username and password", RetryAfter: retryAfter, Code: code}
	case se.Code >= 400 && se.Code < 500:
		tx.result = sdk.Result{Status: sdk.Retryable, Reason: cmd + ": " + reply, RetryAfter: retryAfter, Code: code}
	case rcpt && (se.Code == 550 || se.Code == 551 || se.Code == 553) && se.EnhancedCode[0] == 5 && se.EnhancedCode[1] == 1:
		tx.result = sdk.Result{Status: sdk.Suppress, Reason: cmd + ": mailbox does not exist: " + reply, Code: code}
	default:
		tx.result = sdk.Result{Status: sdk.Permanent, Reason: cmd + ": " + reply, Code: code}
	}
	return tx
}

func formatReply(se *smtp.SMTPError) string {
	if se.EnhancedCode[0] > 0 {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return fmt.Sprintf("%d %s", se.Code, se.Message)
}

var queueIDPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\bqueued as ([A-Za-z0-9][A-Za-z0-9._-]*)`),               // Postfix
	regexp.MustCompile(`(?i)\bid=([A-Za-z0-9][A-Za-z0-9._-]*)`),                      // Exim
	regexp.MustCompile(`^(?:\d\.\d{1,3}\.\d{1,3} )?([A-Za-z0-9]+) Message accepted`), // sendmail
}

// queueID finds the relay's queue id in the text of a 250 reply.
func queueID(text string) string {
	if id, ok := queueIDASCII(text); ok {
		return id
	}
	for _, re := range queueIDPatterns {
		if m := re.FindStringSubmatch(text); m != nil {
			return m[1]
		}
	}
	return ""
}

// queueIDASCII is queueID without regular expressions for an ASCII reply
// (the expressions' case folding matters only beyond ASCII); ok is false
// when it cannot tell.
func queueIDASCII(text string) (id string, ok bool) {
	if !isASCII(text) {
		return "", false
	}
	if id, found := afterWord(text, "queued as "); found {
		return id, true
	}
	if id, found := afterWord(text, "id="); found {
		return id, true
	}
	if !strings.Contains(text, " Message accepted") {
		return "", true
	}
	return "", false // sendmail's form: leave it to the expression
}

// afterWord finds the first place where prefix (lower case, matched in any
// case) starts at a word boundary and is followed by an id
// ([A-Za-z0-9][A-Za-z0-9._-]*), and returns the id.
func afterWord(text, prefix string) (string, bool) {
	for i := 0; i+len(prefix) < len(text); i++ {
		if i > 0 && isWordByte(text[i-1]) || !isWordByte(text[i]) || !strings.EqualFold(text[i:i+len(prefix)], prefix) {
			continue
		}
		rest := text[i+len(prefix):]
		if !isAlnum(rest[0]) {
			continue
		}
		n := 1
		for n < len(rest) && (isAlnum(rest[n]) || rest[n] == '.' || rest[n] == '_' || rest[n] == '-') {
			n++
		}
		return rest[:n], true
	}
	return "", false
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isWordByte(c byte) bool { return isAlnum(c) || c == '_' }
