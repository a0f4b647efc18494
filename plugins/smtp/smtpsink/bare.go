package smtpsink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// bareTimeout bounds every network operation of BareSend.
const bareTimeout = 30 * time.Second

// BareMessage returns message i of BareSend: a plain-text message of about
// 760 bytes with CRLF line ends, distinct for each i.
func BareMessage(i int) []byte {
	var b strings.Builder
	b.Grow(800)
	fmt.Fprintf(&b, "From: Cohort News <news@example.com>\r\n")
	fmt.Fprintf(&b, "To: customer-%d@example.com\r\n", i)
	fmt.Fprintf(&b, "Subject: Your weekly digest, number %d\r\n", i)
	b.WriteString("Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n")
	fmt.Fprintf(&b, "Message-ID: <bare-%d@example.com>\r\n", i)
	fmt.Fprintf(&b, "X-Cohort-Key: bare-%d\r\n", i)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
	fmt.Fprintf(&b, "Hello customer %d,\r\n\r\n", i)
	for b.Len() < 700 {
		b.WriteString("This is the body of a benchmark message, about as long as a short campaign.\r\n")
	}
	b.WriteString("\r\nUnsubscribe: https://example.com/u\r\n")
	return []byte(b.String())
}

// BareSend is the baseline for sending benchmarks: a bare go-smtp client,
// with nothing of Cohort in it, sends n distinct messages (BareMessage) to
// the server at addr (plain SMTP, no TLS, no AUTH), one transaction
// (MAIL, RCPT, DATA) per message, over conns persistent connections that
// share the messages. The duration runs from when every connection has
// said EHLO to the last reply, so connection setup is not counted. Every
// command has a 30s timeout; ctx cancels the whole run.
func BareSend(ctx context.Context, addr string, n, conns int) (time.Duration, error) {
	if n < 0 || conns < 1 {
		return 0, fmt.Errorf("bare send: n = %d, conns = %d: want n ≥ 0 and conns ≥ 1", n, conns)
	}
	conns = min(conns, max(n, 1))
	clients := make([]*smtp.Client, 0, conns)
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	d := net.Dialer{Timeout: bareTimeout}
	for range conns {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, fmt.Errorf("bare send: dial %s: %w", addr, err)
		}
		c := smtp.NewClient(nc)
		c.CommandTimeout, c.SubmissionTimeout = bareTimeout, bareTimeout
		clients = append(clients, c)
		if err := c.Hello("localhost"); err != nil {
			return 0, fmt.Errorf("bare send: EHLO to %s: %w", addr, err)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	defer stop()

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for w, c := range clients {
		wg.Go(func() {
			for i := w; i < n; i += conns {
				if err := bareOne(c, i); err != nil {
					errs[w] = fmt.Errorf("bare send: message %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return elapsed, fmt.Errorf("bare send: %w", err)
	}
	return elapsed, errors.Join(errs...)
}

func bareOne(c *smtp.Client, i int) error {
	if err := c.Mail("news@example.com", nil); err != nil {
		return err
	}
	if err := c.Rcpt(fmt.Sprintf("customer-%d@example.com", i), nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(BareMessage(i)); err != nil {
		return err
	}
	return w.Close()
}
