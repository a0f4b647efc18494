// Package smtpchannel is the SMTP channel (kind "email"): it sends each
// message as one SMTP transaction (MAIL, RCPT, DATA) over a pool of
// persistent connections to a relay, optionally DKIM-signed. With a relay
// that offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write,
// and the content with its terminator in another, which also carries the
// next message's MAIL, RCPT and DATA when the same connection has one.
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
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(msgs), st.s.Connections) {
		wg.Go(func() {
			w := sender{st: st, now: now, msgs: msgs, results: results, touched: touched, next: &next}
			w.run(ctx)
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

// sender is one of Send's workers. It takes messages one at a time from
// the shared index and keeps the connection it got for the messages it
// takes, so a Send hands connections around once, not once per message.
// Under PIPELINING it takes the next message before it finishes the
// current one, so the current one's content and the next one's MAIL, RCPT
// and DATA go in one write (RFC 2920 §3.1: content may open a group of
// commands). A message's outcome is the same as when it goes alone: when
// the connection fails before the next message's replies, the next one
// starts over on another connection, as it would have.
type sender struct {
	st      *state
	now     time.Time
	msgs    []sdk.Message
	results []sdk.Result
	touched []bool // whether any of the message reached the relay (a MAIL command at least)
	next    *atomic.Int64

	b    builder
	held *conn       // the connection kept between messages
	stop func() bool // stops ctx from closing held
}

// outgoing is a message built and ready to go; i < 0 is none.
type outgoing struct {
	i   int
	env *envelope
}

func (w *sender) run(ctx context.Context) {
	var cur outgoing // a message whose transaction is open on held
	cur.i = -1
	for {
		next := w.take(ctx)
		switch {
		case cur.i >= 0:
			if !w.finish(ctx, cur, next) {
				next.i = -1
			}
			cur = next
		case next.i < 0:
			if w.held != nil {
				w.release(ctx, true)
			}
			return
		case w.start(ctx, next, 0):
			cur = next
		}
	}
}

// take takes messages until one is built, giving the others their
// results, or returns none when no message is left.
func (w *sender) take(ctx context.Context) outgoing {
	for {
		i := int(w.next.Add(1)) - 1
		if i >= len(w.msgs) {
			return outgoing{i: -1}
		}
		m := &w.msgs[i]
		if err := ctx.Err(); err != nil {
			w.results[i] = retryable(m.Key, "not sent: "+err.Error(), 0)
			continue
		}
		env, err := w.b.build(m, w.now, w.st.sign)
		if err != nil {
			// A message that cannot be built can never be sent.
			w.results[i] = sdk.Result{Key: m.Key, Status: sdk.Permanent, Reason: err.Error()}
			continue
		}
		return outgoing{i: i, env: env}
	}
}

// start opens m's transaction on the held connection, or on one from the
// pool that it then holds, and reports whether the relay now waits for
// m's content; otherwise m has its result. A reused connection found
// closed is replaced once (attempt 0), transparently, since nothing was
// sent on it.
func (w *sender) start(ctx context.Context, m outgoing, attempt int) bool {
	for ; ; attempt++ {
		if err := ctx.Err(); err != nil {
			w.results[m.i] = retryable(w.msgs[m.i].Key, "not sent: "+err.Error(), 0)
			return false
		}
		cn := w.held
		if cn != nil {
			cn.reused = true // it carried the previous message
		} else {
			var err error
			if cn, err = w.acquire(ctx); err != nil {
				after := retryAfter
				if ctx.Err() != nil {
					after = 0
				}
				w.results[m.i] = retryable(w.msgs[m.i].Key, "not sent: "+err.Error(), after)
				return false
			}
		}
		tx, open := openOn(cn, m.env)
		if open {
			return true
		}
		w.keep(ctx, tx.healthy)
		if tx.stale && cn.reused && attempt == 0 && ctx.Err() == nil {
			continue // an idle connection the relay had closed: nothing was sent
		}
		w.record(ctx, m, tx)
		return false
	}
}

// finish sends cur's content and gives cur its result. When next (if any)
// can go on the same connection, its MAIL, RCPT and DATA go in the same
// write; else it starts on its own. finish reports whether the relay now
// waits for next's content; otherwise next has its result.
func (w *sender) finish(ctx context.Context, cur, next outgoing) bool {
	cn := w.held
	var chained *envelope
	if next.i >= 0 && cn.c.pipelining && cn.sent < w.st.s.MaxPerConnection {
		if _, refused := refuse(cn.c, next.env); !refused {
			chained = next.env
		}
	}
	tx, nextSent := finishOn(cn, cur.env, chained)
	w.record(ctx, cur, tx)
	if next.i < 0 {
		w.keep(ctx, tx.healthy)
		return false
	}
	if !nextSent {
		w.keep(ctx, tx.healthy)
		return w.start(ctx, next, 0)
	}
	cn.reused = true // it carried cur
	tx, open := openedOn(cn, next.env)
	if open {
		return true
	}
	w.keep(ctx, tx.healthy)
	if tx.stale && ctx.Err() == nil {
		return w.start(ctx, next, 1) // as start's retry of a stale connection
	}
	w.record(ctx, next, tx)
	return false
}

// acquire gets a connection from the pool and holds it; until release,
// ctx closes it.
func (w *sender) acquire(ctx context.Context) (*conn, error) {
	cn, err := w.st.pool.get(ctx)
	if err != nil {
		return nil, err
	}
	w.held = cn
	w.stop = context.AfterFunc(ctx, func() { _ = cn.raw.Close() })
	return cn, nil
}

// keep keeps holding the connection after a transaction if it is healthy
// and may carry more, else releases it.
func (w *sender) keep(ctx context.Context, healthy bool) {
	if !healthy || w.held.sent >= w.st.s.MaxPerConnection {
		w.release(ctx, healthy)
	}
}

// release returns the held connection to the pool.
func (w *sender) release(ctx context.Context, healthy bool) {
	if !w.stop() {
		healthy = false // ctx closed it
	}
	w.st.pool.put(ctx, w.held, healthy)
	w.held, w.stop = nil, nil
}

// record gives m the outcome of its transaction.
func (w *sender) record(ctx context.Context, m outgoing, tx txResult) {
	if err := ctx.Err(); err != nil && tx.result.Status == sdk.Retryable {
		tx.result.RetryAfter = 0
		tx.result.Reason += " (" + err.Error() + ")"
	}
	tx.result.Key = w.msgs[m.i].Key
	w.results[m.i], w.touched[m.i] = tx.result, tx.touched
}

// txResult is the outcome of one transaction.
type txResult struct {
	result  sdk.Result
	healthy bool // the connection can carry another transaction
	stale   bool // the connection was dead before MAIL got an answer
	touched bool // a command reached the relay
}

// refuse gives the outcome of a message that must not be offered to the
// relay at all.
func refuse(c *client, env *envelope) (txResult, bool) {
	if env.utf8 && !c.has("SMTPUTF8") {
		return txResult{healthy: true, result: sdk.Result{Status: sdk.Permanent,
			Reason: fmt.Sprintf("address <%s> or <%s> is not ASCII and the relay does not offer SMTPUTF8", env.from, env.to)}}, true
	}
	if strings.ContainsAny(env.from, "\r\n") || strings.ContainsAny(env.to, "\r\n") {
		// The builder refuses such addresses; a command must never carry one.
		return txResult{healthy: true, result: sdk.Result{Status: sdk.Permanent,
			Reason: fmt.Sprintf("address %q or %q has a line break", env.from, env.to)}}, true
	}
	return txResult{}, false
}

// openOn runs MAIL, RCPT and DATA for env on cn. open says the relay waits
// for the content; otherwise tx is the outcome.
func openOn(cn *conn, env *envelope) (tx txResult, open bool) {
	cn.sent++
	if tx, refused := refuse(cn.c, env); refused {
		return tx, false
	}
	at, err, broken := cn.c.open(env.from, env.to, env.utf8)
	return opened(cn.c, env, at, err, broken)
}

// openedOn is openOn for MAIL, RCPT and DATA that went with the previous
// message's content: it reads their replies.
func openedOn(cn *conn, env *envelope) (tx txResult, open bool) {
	cn.sent++
	at, err, broken := cn.c.readOpen()
	return opened(cn.c, env, at, err, broken)
}

// opened classifies the failure of MAIL, RCPT or DATA (at; stageNone is
// none), ending the transaction with RSET after RCPT or DATA.
func opened(c *client, env *envelope, at stage, err error, broken bool) (tx txResult, open bool) {
	switch at {
	case stageNone:
		return txResult{}, true
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
	if broken {
		tx.healthy = false
	}
	if at != stageMail {
		tx = reset(c, tx)
	}
	return tx, false
}

// finishOn sends env's content on cn, whose relay waits for it, and gives
// its outcome. With next, next's MAIL, RCPT and DATA go in the same write;
// nextSent says they left and the connection stands to read their replies
// (openedOn). A write that failed after the terminator left (in next's
// commands) makes env unknown, not retryable.
func finishOn(cn *conn, env, next *envelope) (tx txResult, nextSent bool) {
	text, sent, err := cn.c.finish(env.data, next)
	nextSent = next != nil && sent && (err == nil || isReply(err) && !isCode(err, 421))
	if err != nil {
		switch {
		case isReply(err):
			return failed("end of DATA", err, false), nextSent
		case !sent:
			// The terminator did not leave: the relay cannot have taken it.
			return txResult{touched: true, result: retryable("", "connection failed before the end of the message was sent: "+err.Error(), retryAfter)}, false
		default:
			return txResult{touched: true, result: sdk.Result{Status: sdk.OutcomeUnknown,
				Reason: "no reply after the message was sent (the relay may have it): " + err.Error()}}, false
		}
	}
	id := queueID(text)
	if id == "" {
		id = env.messageID
	}
	return txResult{healthy: true, touched: true, result: sdk.Result{Status: sdk.Accepted, ProviderID: id}}, nextSent
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
