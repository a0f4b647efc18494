// Package sdk is the Cohort plugin SDK: plain Go types and interfaces for
// writing source and channel plugins, and Serve, which runs a plugin over
// hashicorp/go-plugin gRPC. Plugin authors never touch protobuf.
//
// A channel plugin's main is one call:
//
//	func main() { sdk.Serve(sdk.WithChannel(&myChannel{})) }
package sdk

import (
	"context"
	"time"
)

// TraitType is the type of a customer trait as a source declares it.
type TraitType int

const (
	TypeUnknown TraitType = iota
	TypeString
	TypeNumber
	TypeBool
	TypeTime
	TypeStringList
)

func (t TraitType) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeNumber:
		return "number"
	case TypeBool:
		return "bool"
	case TypeTime:
		return "time"
	case TypeStringList:
		return "list"
	}
	return "unknown"
}

// ParseTraitType parses the names String returns ("string", "number", "bool",
// "time", "list").
func ParseTraitType(s string) (TraitType, bool) {
	for t := TypeString; t <= TypeStringList; t++ {
		if t.String() == s {
			return t, true
		}
	}
	return TypeUnknown, false
}

// Trait declares one trait of a source's schema.
type Trait struct {
	Name        string
	Type        TraitType
	Description string
}

// ContactFields names the traits that hold contact data.
type ContactFields struct {
	Email    string
	Phone    string
	Timezone string
}

// ConfigureRequest is passed to Configure.
type ConfigureRequest struct {
	// Instance is the plugin instance's name in config.yaml.
	Instance string
	// Config is the instance's config block as YAML (may be empty).
	Config []byte
	// PublicURL is the daemon's public base URL (config http.public_url).
	PublicURL string
	// WebhookPath is where this instance's webhooks are routed, e.g. "/webhooks/crm".
	WebhookPath string
}

// SourceInfo is what a source returns from Configure.
type SourceInfo struct {
	Name       string
	Version    string
	Traits     []Trait
	EventNames []string
	Contact    ContactFields
	// Webhooks is set by the SDK when the source implements SourceWebhooker.
	Webhooks bool
}

// Value is one trait value. The zero Value (Type == TypeUnknown) is null: the
// trait is missing.
type Value struct {
	Type TraitType
	Str  string
	Num  float64
	Bool bool
	Time time.Time
	List []string
}

// Null reports whether v is the missing value.
func (v Value) Null() bool { return v.Type == TypeUnknown }

// String, Number, Bool, Time and List build Values.
func String(s string) Value  { return Value{Type: TypeString, Str: s} }
func Number(f float64) Value { return Value{Type: TypeNumber, Num: f} }
func Bool(b bool) Value      { return Value{Type: TypeBool, Bool: b} }
func Time(t time.Time) Value { return Value{Type: TypeTime, Time: t} }
func List(l ...string) Value { return Value{Type: TypeStringList, List: l} }

// Customer is an upsert: the given traits replace those values; traits not
// given are kept; a trait given as a null Value is removed.
type Customer struct {
	ID     string
	Traits map[string]Value
}

// Event is something a customer did. ID is stable: a replayed ID counts once.
type Event struct {
	ID         string
	CustomerID string
	Name       string
	Time       time.Time
	Value      float64
	HasValue   bool
	Properties map[string]Value
}

// ConsentStatus is opt-in or opt-out.
type ConsentStatus int

const (
	ConsentUnknown ConsentStatus = iota
	OptIn
	OptOut
)

// ConsentChange records a customer's consent for a channel kind ("email",
// "sms", "webhook" or "all"), when, and on what basis.
type ConsentChange struct {
	CustomerID string
	Kind       string
	Status     ConsentStatus
	Time       time.Time
	Basis      string
}

// Problem reports a record (or one field of it) that the plugin skipped.
type Problem struct {
	CustomerID string
	Field      string
	Message    string
	Line       int
	Column     int
}

// Batch is committed by the host together with its Cursor, in one transaction.
// An empty Cursor means "no new position": the host keeps the last committed
// one (so a caught-up batch with nothing new need not repeat it).
type Batch struct {
	Customers []Customer
	Deletes   []string
	Events    []Event
	Consents  []ConsentChange
	Cursor    string
	CaughtUp  bool
	Problems  []Problem
}

// Source brings customers, events and consent into Cohort.
type Source interface {
	Configure(ctx context.Context, req ConfigureRequest) (SourceInfo, error)
	// Pull sends batches from cursor on through send. A finite source sends a
	// batch with CaughtUp set and returns nil; a live source keeps going until
	// ctx is done. If send returns an error, Pull must return it.
	Pull(ctx context.Context, cursor string, send func(*Batch) error) error
}

// Header is one HTTP header with all its values.
type Header struct {
	Name   string
	Values []string
}

// WebhookRequest is an HTTP request received at /webhooks/{instance}/...
type WebhookRequest struct {
	Method string
	// URL is the full public URL as called: http.public_url + path + query.
	URL string
	// Path is the part below /webhooks/{instance}, starting with "/".
	Path       string
	Headers    []Header
	Body       []byte
	RemoteAddr string
}

// Header returns the first value of the named header (case-insensitive).
func (r *WebhookRequest) Header(name string) string { return headerGet(r.Headers, name) }

// HTTPResponse is what the daemon answers a webhook caller with.
type HTTPResponse struct {
	Status  int
	Headers []Header
	Body    []byte
}

// SourceWebhookResponse is a source's answer to a webhook: the HTTP response,
// and data to commit before the response is given.
type SourceWebhookResponse struct {
	Response HTTPResponse
	Batch    *Batch
}

// SourceWebhooker is implemented by sources that receive webhooks.
type SourceWebhooker interface {
	Webhook(ctx context.Context, req *WebhookRequest) (*SourceWebhookResponse, error)
}

// ChannelInfo is what a channel returns from Configure.
type ChannelInfo struct {
	Name    string
	Version string
	// Kind is "email", "sms" or "webhook".
	Kind     string
	MaxBatch int
	// RateHint is the provider's sustainable messages per second (0 = unknown).
	RateHint float64
	// Webhooks is set by the SDK when the channel implements ChannelWebhooker.
	Webhooks bool
}

// Message is one rendered message for one recipient.
type Message struct {
	// Key is the outbox row key: unique, stable across retries.
	Key        string
	CustomerID string
	To         string
	From       string
	ReplyTo    string
	Subject    string
	Text       string
	HTML       string
	Headers    []Header
	Metadata   map[string]string
}

// ResultStatus says what became of one message.
type ResultStatus int

const (
	StatusUnknown ResultStatus = iota
	// Accepted: the provider took the message; ProviderID identifies it.
	Accepted
	// Retryable: the provider did not take it; try again after RetryAfter.
	Retryable
	// Permanent: it will never succeed.
	Permanent
	// Suppress: the address must never be used again.
	Suppress
	// OutcomeUnknown: the request may have reached the provider but no answer came
	// (a timeout or a connection lost after the request was written). The
	// host records the message as unknown and does not resend it.
	OutcomeUnknown
)

func (s ResultStatus) String() string {
	switch s {
	case Accepted:
		return "accepted"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	case Suppress:
		return "suppress"
	case OutcomeUnknown:
		return "unknown"
	}
	return "unspecified"
}

// Result is the outcome of sending one Message.
type Result struct {
	Key        string
	Status     ResultStatus
	ProviderID string
	RetryAfter time.Duration
	Reason     string
	Code       string
}

// Channel sends messages out.
type Channel interface {
	Configure(ctx context.Context, req ConfigureRequest) (ChannelInfo, error)
	// Send returns exactly one Result per message, in any order, matched by Key.
	// An error means the whole call failed and nothing is known of any message.
	Send(ctx context.Context, msgs []Message) ([]Result, error)
}

// DeliveryType is what a provider reported about a sent message.
type DeliveryType int

const (
	DeliveryUnknown DeliveryType = iota
	DeliveryAccepted
	DeliveryDelivered
	DeliveryDeferred
	DeliveryBounced
	DeliveryDropped
	DeliveryOpened
	DeliveryClicked
	DeliverySpamReport
	DeliveryUnsubscribed
	DeliveryFailed
)

func (d DeliveryType) String() string {
	switch d {
	case DeliveryAccepted:
		return "accepted"
	case DeliveryDelivered:
		return "delivered"
	case DeliveryDeferred:
		return "deferred"
	case DeliveryBounced:
		return "bounced"
	case DeliveryDropped:
		return "dropped"
	case DeliveryOpened:
		return "opened"
	case DeliveryClicked:
		return "clicked"
	case DeliverySpamReport:
		return "spam_report"
	case DeliveryUnsubscribed:
		return "unsubscribed"
	case DeliveryFailed:
		return "failed"
	}
	return "unknown"
}

// DeliveryEvent is one provider event about a message.
type DeliveryEvent struct {
	Key        string
	ProviderID string
	Type       DeliveryType
	Address    string
	Time       time.Time
	Reason     string
	URL        string
	EventID    string
}

// ChannelWebhookResponse is a channel's answer to a webhook.
type ChannelWebhookResponse struct {
	Response HTTPResponse
	Events   []DeliveryEvent
}

// ChannelWebhooker is implemented by channels that receive provider webhooks.
type ChannelWebhooker interface {
	Webhook(ctx context.Context, req *WebhookRequest) (*ChannelWebhookResponse, error)
}
