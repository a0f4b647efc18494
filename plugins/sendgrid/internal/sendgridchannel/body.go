package sendgridchannel

import (
	"fmt"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cohortd/cohort/plugins/internal/mailaddr"
	"github.com/cohortd/cohort/sdk"
)

// bodyWriter writes Mail Send bodies byte for byte as Body does (sendgrid-go's
// mail.SGMailV3 through encoding/json without HTML escaping), without
// reflection, maps or the intermediate structs. It remembers the last From
// and Reply-To it parsed: within a campaign they are the same for every
// message. A bodyWriter is used by one goroutine at a time.
type bodyWriter struct {
	opts          BodyOptions
	from, replyTo parsedAddress
	headers       []sdk.Header // scratch for the header fields, sorted by name
}

// parsedAddress is a raw address and what mail.ParseAddress made of it.
type parsedAddress struct {
	raw  string
	addr *mail.Address
	err  error
}

func (p *parsedAddress) parse(raw string) (*mail.Address, error) {
	if p.addr == nil && p.err == nil || p.raw != raw {
		p.raw = raw
		p.addr, p.err = mail.ParseAddress(raw)
	}
	return p.addr, p.err
}

// appendBody appends m's Mail Send body to dst; it returns the same bytes
// and the same errors as Body(m, w.opts).
func (w *bodyWriter) appendBody(dst []byte, m *sdk.Message) ([]byte, error) {
	if strings.TrimSpace(m.From) == "" {
		return nil, fmt.Errorf("message has no from address: set from in the campaign or its channel defaults")
	}
	from, err := w.from.parse(m.From)
	if err != nil {
		return nil, fmt.Errorf("from %q is not an email address: %w", m.From, err)
	}
	to, err := parseAddress(m.To)
	if err != nil {
		return nil, fmt.Errorf("recipient %q is not an email address: %w", m.To, err)
	}
	var replyTo *mail.Address
	if strings.TrimSpace(m.ReplyTo) != "" {
		if replyTo, err = w.replyTo.parse(m.ReplyTo); err != nil {
			return nil, fmt.Errorf("reply-to %q is not an email address: %w", m.ReplyTo, err)
		}
	}

	// Fields in SGMailV3's order, each left out when empty (omitempty).
	b := append(dst, `{"from":`...)
	b = appendEmail(b, from.Name, from.Address)
	if m.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, m.Subject)
	}
	b = append(b, `,"personalizations":[{"to":[`...)
	b = appendEmail(b, recipientName(to.Name), to.Address)
	// custom_args is a map: encoding/json writes its keys sorted.
	campaign := m.Metadata["campaign"]
	b = append(b, `],"custom_args":{`...)
	if campaign != "" {
		b = append(b, `"cohort_campaign":`...)
		b = appendString(b, campaign)
		b = append(b, ',')
	}
	b = append(b, `"cohort_key":`...)
	b = appendString(b, m.Key)
	if v := m.Metadata["variant"]; v != "" {
		b = append(b, `,"cohort_variant":`...)
		b = appendString(b, v)
	}
	b = append(b, "}}]"...)

	if m.Text != "" || m.HTML != "" {
		b = append(b, `,"content":[`...)
		if m.Text != "" {
			b = append(b, `{"type":"text/plain","value":`...)
			b = appendString(b, m.Text)
			b = append(b, '}')
			if m.HTML != "" {
				b = append(b, ',')
			}
		}
		if m.HTML != "" {
			b = append(b, `{"type":"text/html","value":`...)
			b = appendString(b, m.HTML)
			b = append(b, '}')
		}
		b = append(b, ']')
	}

	// headers is a map too: sorted names, the last of equal names winning,
	// values joined with ", ".
	hs := w.headers[:0]
	for _, h := range m.Headers {
		if len(h.Values) > 0 {
			hs = append(hs, h)
		}
	}
	if len(hs) > 0 {
		slices.SortStableFunc(hs, func(x, y sdk.Header) int { return strings.Compare(x.Name, y.Name) })
		b = append(b, `,"headers":{`...)
		first := true
		for i, h := range hs {
			if i+1 < len(hs) && hs[i+1].Name == h.Name {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, h.Name)
			b = append(b, ':')
			b = appendJoined(b, h.Values)
		}
		b = append(b, '}')
	}
	clear(hs)
	w.headers = hs[:0]

	ncats := len(w.opts.Categories)
	addCampaign := campaign != "" && ncats < maxCategories && len(campaign) <= maxCategoryLen && !slices.Contains(w.opts.Categories, campaign)
	if ncats > 0 || addCampaign {
		b = append(b, `,"categories":[`...)
		for i, c := range w.opts.Categories {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, c)
		}
		if addCampaign {
			if ncats > 0 {
				b = append(b, ',')
			}
			b = appendString(b, campaign)
		}
		b = append(b, ']')
	}
	if w.opts.ASMGroupID > 0 {
		b = append(b, `,"asm":{"group_id":`...)
		b = strconv.AppendInt(b, int64(w.opts.ASMGroupID), 10)
		b = append(b, '}')
	}
	if w.opts.Sandbox {
		b = append(b, `,"mail_settings":{"sandbox_mode":{"enable":true}}`...)
	}
	if replyTo != nil {
		b = append(b, `,"reply_to":`...)
		b = appendEmail(b, replyTo.Name, replyTo.Address)
	}
	return append(b, '}'), nil
}

// appendEmail appends sendgrid-go's mail.Email: {"name":...,"email":...},
// each left out when empty.
func appendEmail(b []byte, name, address string) []byte {
	b = append(b, '{')
	if name != "" {
		b = append(b, `"name":`...)
		b = appendString(b, name)
		if address != "" {
			b = append(b, ',')
		}
	}
	if address != "" {
		b = append(b, `"email":`...)
		b = appendString(b, address)
	}
	return append(b, '}')
}

// appendJoined appends the JSON string of strings.Join(values, ", "). The
// pieces can be escaped one by one: an invalid UTF-8 sequence never takes
// in the ASCII separator.
func appendJoined(b []byte, values []string) []byte {
	b = append(b, '"')
	for i, v := range values {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendEscaped(b, v)
	}
	return append(b, '"')
}

// parseAddress is mail.ParseAddress, without its parser for the common
// case of a bare addr-spec of ASCII dot-atoms (user@example.com), which
// mail.ParseAddress returns as it is, with no name.
func parseAddress(s string) (*mail.Address, error) {
	if mailaddr.IsDotAtomAddress(s) {
		return &mail.Address{Address: s}, nil
	}
	return mail.ParseAddress(s)
}

const hexDigits = "0123456789abcdef"

// jsonPlain marks the bytes a JSON string holds as they are: ASCII from
// space on, but for '"' and '\\'.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string exactly as encoding/json writes it
// with SetEscapeHTML(false): '"' and '\\' escaped, \b \f \n \r \t by name,
// other control characters as \u00XX, invalid UTF-8 as \ufffd and U+2028,
// U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped is appendString without the quotes.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && jsonPlain[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
