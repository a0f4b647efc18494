package sgserver

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/mail"
	"strings"
	"time"
)

// Address is an email address with an optional display name.
type Address struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

// Personalization is one email of a Mail Send request: its recipients and
// what it overrides.
type Personalization struct {
	To            []Address         `json:"to"`
	Cc            []Address         `json:"cc,omitempty"`
	Bcc           []Address         `json:"bcc,omitempty"`
	From          *Address          `json:"from,omitempty"`
	Subject       string            `json:"subject,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Substitutions map[string]string `json:"substitutions,omitempty"`
	CustomArgs    map[string]string `json:"custom_args,omitempty"`
	SendAt        int64             `json:"send_at,omitempty"`
}

// Content is one body part.
type Content struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// ASM is the unsubscribe group of a message.
type ASM struct {
	GroupID         int   `json:"group_id"`
	GroupsToDisplay []int `json:"groups_to_display,omitempty"`
}

// Mail is one accepted Mail Send request as it arrived.
type Mail struct {
	// MessageID is the X-Message-Id the request was answered with (or
	// would have been, had it not been dropped).
	MessageID  string
	ReceivedAt time.Time
	// Dropped is set when the connection was closed instead of answering.
	Dropped bool

	From             Address
	ReplyTo          *Address
	Subject          string
	Personalizations []Personalization
	Content          []Content
	Headers          map[string]string
	Categories       []string
	CustomArgs       map[string]string
	TemplateID       string
	ASM              *ASM
	SendAt           int64
	BatchID          string
	Attachments      int
}

// CustomArgsOf returns the custom_args of personalization i as SendGrid
// applies them: the message's, overridden by the personalization's.
func (m *Mail) CustomArgsOf(i int) map[string]string {
	args := maps.Clone(m.CustomArgs)
	if args == nil {
		args = map[string]string{}
	}
	maps.Copy(args, m.Personalizations[i].CustomArgs)
	return args
}

// SubjectOf returns the subject of personalization i.
func (m *Mail) SubjectOf(i int) string {
	if s := m.Personalizations[i].Subject; s != "" {
		return s
	}
	return m.Subject
}

// Keys returns the custom_args "cohort_key" of each personalization that
// has one.
func (m *Mail) Keys() []string {
	var keys []string
	for i := range m.Personalizations {
		if k := m.CustomArgsOf(i)["cohort_key"]; k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// Body returns the value of the first content part of the given type
// ("text/plain", "text/html"), or "".
func (m *Mail) Body(contentType string) string {
	for _, c := range m.Content {
		if strings.EqualFold(c.Type, contentType) {
			return c.Value
		}
	}
	return ""
}

// sendRequest is a Mail Send body as decoded. Fields the server does not
// look at are ignored, as SendGrid ignores unknown ones.
type sendRequest struct {
	Personalizations []Personalization `json:"personalizations"`
	From             *Address          `json:"from"`
	ReplyTo          *Address          `json:"reply_to"`
	Subject          string            `json:"subject"`
	Content          []Content         `json:"content"`
	Attachments      []json.RawMessage `json:"attachments"`
	TemplateID       string            `json:"template_id"`
	Headers          map[string]string `json:"headers"`
	Categories       []string          `json:"categories"`
	CustomArgs       map[string]string `json:"custom_args"`
	SendAt           int64             `json:"send_at"`
	BatchID          string            `json:"batch_id"`
	ASM              *ASM              `json:"asm"`
	MailSettings     *struct {
		SandboxMode *struct {
			Enable *bool `json:"enable"`
		} `json:"sandbox_mode"`
	} `json:"mail_settings"`
}

func (r *sendRequest) sandbox() bool {
	ms := r.MailSettings
	return ms != nil && ms.SandboxMode != nil && ms.SandboxMode.Enable != nil && *ms.SandboxMode.Enable
}

func (r *sendRequest) mail(id string, at time.Time) Mail {
	return Mail{
		MessageID:        id,
		ReceivedAt:       at,
		From:             *r.From,
		ReplyTo:          r.ReplyTo,
		Subject:          r.Subject,
		Personalizations: r.Personalizations,
		Content:          r.Content,
		Headers:          r.Headers,
		Categories:       r.Categories,
		CustomArgs:       r.CustomArgs,
		TemplateID:       r.TemplateID,
		ASM:              r.ASM,
		SendAt:           r.SendAt,
		BatchID:          r.BatchID,
		Attachments:      len(r.Attachments),
	}
}

// Limits SendGrid enforces.
const (
	maxPersonalizations = 1000
	maxRecipients       = 1000
	maxCategories       = 10
	maxCategoryLen      = 255
	maxCustomArgsBytes  = 10000 // custom_args must be less than this
	maxSendAhead        = 72 * time.Hour
)

// reservedHeaders may not be set in headers.
var reservedHeaders = []string{
	"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
	"content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
}

const helpBase = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."

func fieldErr(field, help, format string, args ...any) apiError {
	e := apiError{Message: fmt.Sprintf(format, args...)}
	if field != "" {
		e.Field = &field
	}
	if help != "" {
		h := helpBase + help
		e.Help = &h
	}
	return e
}

// validate returns the errors SendGrid would answer the request with.
func validate(r *sendRequest, now time.Time) []apiError {
	var errs []apiError
	add := func(e apiError) { errs = append(errs, e) }

	switch n := len(r.Personalizations); {
	case n == 0:
		add(fieldErr("personalizations", "personalizations",
			"The personalizations field is required and must have at least one personalization."))
	case n > maxPersonalizations:
		add(fieldErr("personalizations", "personalizations",
			"The personalization block is limited to %d personalizations per API request. You have provided %d personalizations. Please consider splitting this into multiple requests and resending your request.",
			maxPersonalizations, n))
	}

	recipients := 0
	seen := map[string]string{} // lower-case address -> field of first use
	everySubject := len(r.Personalizations) > 0
	for i, p := range r.Personalizations {
		pf := fmt.Sprintf("personalizations.%d", i)
		if len(p.To) == 0 {
			add(fieldErr(pf+".to", "personalizations.to",
				"The to array is required for all personalization objects, and must have at least one email object with a valid email address."))
		}
		if p.Subject == "" {
			everySubject = false
		}
		local := map[string]bool{}
		for _, list := range []struct {
			name  string
			addrs []Address
		}{{"to", p.To}, {"cc", p.Cc}, {"bcc", p.Bcc}} {
			for j, a := range list.addrs {
				recipients++
				af := fmt.Sprintf("%s.%s.%d", pf, list.name, j)
				if !validAddress(a.Email) {
					add(fieldErr(af+".email", "personalizations."+list.name, "Does not contain a valid address."))
				}
				if strings.ContainsAny(a.Name, ";,") {
					add(fieldErr(af+".name", "personalizations."+list.name,
						"The %s.name, cc.name, and bcc.name personalizations cannot include either the ; or , characters.", list.name))
				}
				key := strings.ToLower(a.Email)
				switch {
				case local[key]:
					add(fieldErr(pf, "recipient-errors",
						"Each email address in the personalization block should be unique between to, cc, and bcc. We found the first duplicate instance of [%s] in the %s.%s field.",
						a.Email, pf, list.name))
				case seen[key] != "":
					add(fieldErr("personalizations", "recipient-errors",
						"Each unique email address in the personalizations array should only be included once. You have included [%s] more than once.", a.Email))
				}
				local[key] = true
				if seen[key] == "" {
					seen[key] = af
				}
			}
		}
		if bad := reservedHeader(p.Headers); bad != "" {
			add(fieldErr(pf+".headers", "personalizations.headers",
				"The %s header is a reserved header and cannot be used in the headers parameter.", bad))
		}
		if n := customArgsBytes(r.CustomArgs, p.CustomArgs); n >= maxCustomArgsBytes {
			add(fieldErr(pf+".custom_args", "custom_args",
				"The total size of your custom_args must be less than %d bytes; this personalization has %d bytes.", maxCustomArgsBytes, n))
		}
	}
	if recipients > maxRecipients {
		add(fieldErr("personalizations", "personalizations",
			"There is a limit of %d total recipients (to + cc + bcc) per request. You have provided %d.", maxRecipients, recipients))
	}

	switch {
	case r.From == nil || r.From.Email == "":
		add(fieldErr("from.email", "from",
			`The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.  e.g. {"email" : "example@example.com"}  or {"email" : "example@example.com", "name" : "Example Recipient"}.`))
	case !validAddress(r.From.Email):
		add(fieldErr("from.email", "from", "The from email does not contain a valid address."))
	}
	if r.ReplyTo != nil && !validAddress(r.ReplyTo.Email) {
		add(fieldErr("reply_to.email", "reply_to", "The reply_to email does not contain a valid address."))
	}
	if r.Subject == "" && r.TemplateID == "" && !everySubject {
		add(fieldErr("subject", "subject",
			"The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined."))
	}
	if len(r.Content) == 0 && r.TemplateID == "" {
		add(fieldErr("content", "content",
			"Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required."))
	}
	for i, c := range r.Content {
		if c.Value == "" {
			add(fieldErr(fmt.Sprintf("content.%d.value", i), "content.value",
				"The content value must be a string at least one character in length."))
		}
		if strings.EqualFold(c.Type, "text/plain") && i > 0 {
			add(fieldErr("content", "content",
				"If present, text/plain content must be first, followed by text/html, and then any other content."))
		}
	}
	if len(r.Categories) > maxCategories {
		add(fieldErr("categories", "categories",
			"Too many categories: a message may have at most %d categories; you have provided %d.", maxCategories, len(r.Categories)))
	}
	for i, c := range r.Categories {
		if len(c) > maxCategoryLen {
			add(fieldErr(fmt.Sprintf("categories.%d", i), "categories",
				"A category cannot be longer than %d characters.", maxCategoryLen))
		}
	}
	if bad := reservedHeader(r.Headers); bad != "" {
		add(fieldErr("headers", "headers",
			"The %s header is a reserved header and cannot be used in the headers parameter.", bad))
	}
	if len(r.Personalizations) == 0 {
		if n := customArgsBytes(r.CustomArgs, nil); n >= maxCustomArgsBytes {
			add(fieldErr("custom_args", "custom_args",
				"The total size of your custom_args must be less than %d bytes; you have provided %d bytes.", maxCustomArgsBytes, n))
		}
	}
	for i, p := range r.Personalizations {
		if p.SendAt > 0 && time.Unix(p.SendAt, 0).After(now.Add(maxSendAhead)) {
			add(fieldErr(fmt.Sprintf("personalizations.%d.send_at", i), "personalizations.send_at",
				"The send_at parameter cannot be more than 72 hours in the future."))
		}
	}
	if r.SendAt > 0 && time.Unix(r.SendAt, 0).After(now.Add(maxSendAhead)) {
		add(fieldErr("send_at", "send_at", "The send_at parameter cannot be more than 72 hours in the future."))
	}
	if r.ASM != nil && r.ASM.GroupID <= 0 {
		add(fieldErr("asm.group_id", "asm.group_id", "The asm.group_id must be a positive integer."))
	}
	return errs
}

// validAddress reports whether s is a bare address SendGrid takes:
// local@domain, with a dot in the domain.
func validAddress(s string) bool {
	if s == "" || strings.ContainsAny(s, "<> \t\r\n") {
		return false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	domain := s[at+1:]
	return at > 0 && strings.Contains(domain, ".") && !strings.HasPrefix(domain, ".") && !strings.HasSuffix(domain, ".")
}

// customArgsBytes is the size of the custom_args of one email, as JSON.
func customArgsBytes(top, own map[string]string) int {
	merged := maps.Clone(top)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, own)
	if len(merged) == 0 {
		return 0
	}
	b, _ := json.Marshal(merged)
	return len(b)
}

func reservedHeader(h map[string]string) string {
	for name := range h {
		for _, r := range reservedHeaders {
			if strings.EqualFold(name, r) {
				return name
			}
		}
	}
	return ""
}
