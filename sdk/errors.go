package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrNoWebhooks is returned (wrapped) by Webhook on the host side when the
// plugin does not implement webhooks: errors.Is(err, sdk.ErrNoWebhooks).
var ErrNoWebhooks = errors.New("plugin does not implement webhooks")

// ErrorCode classifies an Error so the host can react to it (fail the
// config, retry later, give up) without parsing messages.
type ErrorCode int

const (
	// Unknown is an error the plugin did not classify.
	Unknown ErrorCode = iota
	// InvalidConfig: the instance's config is wrong; Field names the key.
	InvalidConfig
	// InvalidArgument: a request (message, cursor, webhook) is wrong.
	InvalidArgument
	// NotFound: something the request refers to does not exist.
	NotFound
	// Unavailable: the provider or upstream system is down; try again later.
	Unavailable
	// DeadlineExceeded: the provider or upstream system did not answer in time.
	DeadlineExceeded
	// Unauthenticated: the credentials in the config were refused.
	Unauthenticated
	// PermissionDenied: the credentials lack a permission.
	PermissionDenied
	// ResourceExhausted: a quota or rate limit was hit; try again later.
	ResourceExhausted
	// Internal: a bug or an unexpected state in the plugin.
	Internal
)

// errorCodeNames are the wire names of the codes, carried as the Reason of a
// google.rpc.ErrorInfo in the gRPC status details.
var errorCodeNames = [...]string{
	Unknown:           "UNKNOWN",
	InvalidConfig:     "INVALID_CONFIG",
	InvalidArgument:   "INVALID_ARGUMENT",
	NotFound:          "NOT_FOUND",
	Unavailable:       "UNAVAILABLE",
	DeadlineExceeded:  "DEADLINE_EXCEEDED",
	Unauthenticated:   "UNAUTHENTICATED",
	PermissionDenied:  "PERMISSION_DENIED",
	ResourceExhausted: "RESOURCE_EXHAUSTED",
	Internal:          "INTERNAL",
}

// errorCodeGRPC maps each code to the gRPC status code it travels as.
var errorCodeGRPC = [...]codes.Code{
	Unknown:           codes.Unknown,
	InvalidConfig:     codes.InvalidArgument,
	InvalidArgument:   codes.InvalidArgument,
	NotFound:          codes.NotFound,
	Unavailable:       codes.Unavailable,
	DeadlineExceeded:  codes.DeadlineExceeded,
	Unauthenticated:   codes.Unauthenticated,
	PermissionDenied:  codes.PermissionDenied,
	ResourceExhausted: codes.ResourceExhausted,
	Internal:          codes.Internal,
}

// String returns the code's wire name, e.g. "INVALID_CONFIG".
func (c ErrorCode) String() string {
	if c < 0 || int(c) >= len(errorCodeNames) {
		return errorCodeNames[Unknown]
	}
	return errorCodeNames[c]
}

func parseErrorCode(s string) (ErrorCode, bool) {
	for c, name := range errorCodeNames {
		if name == s {
			return ErrorCode(c), true
		}
	}
	return Unknown, false
}

// ErrorDomain is the google.rpc.ErrorInfo domain that marks a Cohort plugin
// error in a gRPC status. A plugin in another language returns a typed error
// as a status with an ErrorInfo{domain: ErrorDomain, reason: ErrorCode name
// ("INVALID_CONFIG"...), metadata: {"field": ..., "message": ...}}.
const ErrorDomain = "cohort.plugin.v1"

// Error is a plugin error that keeps its code, field and message across the
// process boundary: the host gets it back with errors.As, also when the
// plugin wrapped it. Every other error from a plugin reaches the host as an
// *Error too: code Unknown for a plain error, Unavailable when the plugin
// process is gone, DeadlineExceeded when the plugin's own deadline expired.
// When the host's context is done, the host gets the context's error.
type Error struct {
	Code ErrorCode
	// Field is the config key or request field at fault, if any (e.g. "kind").
	Field string
	// Message says what is wrong and what to change.
	Message string
}

// Errorf builds an *Error. field may be empty.
func Errorf(code ErrorCode, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Error returns the message, prefixed with the field when the message does
// not already mention it.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = strings.ToLower(strings.ReplaceAll(e.Code.String(), "_", " "))
	}
	if e.Field != "" && !strings.Contains(msg, e.Field) {
		return e.Field + ": " + msg
	}
	return msg
}

// remoteError keeps the full text of an error the plugin wrapped around an
// *Error, while errors.As still finds the *Error.
type remoteError struct {
	msg string
	err *Error
}

func (r *remoteError) Error() string { return r.msg }
func (r *remoteError) Unwrap() error { return r.err }

// toStatus turns an error from a plugin implementation into a gRPC status
// error that carries its *Error (if any) as an ErrorInfo detail.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	switch {
	case errors.As(err, &e):
		code := codes.Unknown
		if e.Code >= 0 && int(e.Code) < len(errorCodeGRPC) {
			code = errorCodeGRPC[e.Code]
		}
		md := map[string]string{"message": e.Message}
		if e.Field != "" {
			md["field"] = e.Field
		}
		st, derr := status.New(code, err.Error()).WithDetails(&errdetails.ErrorInfo{
			Domain:   ErrorDomain,
			Reason:   e.Code.String(),
			Metadata: md,
		})
		if derr != nil {
			return status.Error(code, err.Error())
		}
		return st.Err()
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// deadlineSlack is how far ahead of the caller's deadline a plugin's
// DEADLINE_EXCEEDED still counts as that deadline (clocks of two
// processes, one of them counting whole milliseconds).
const deadlineSlack = 10 * time.Millisecond

// fromStatus turns an error from a gRPC call into what the host sees:
// ctx's error (wrapped) when ctx is done, an *Error (possibly wrapped)
// otherwise.
// what names the call for the messages ("channel send"); configure tells
// that an InvalidArgument without details is a config error.
func fromStatus(ctx context.Context, what string, err error, configure bool) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", what, ctxErr)
	}
	st, ok := status.FromError(err)
	// gRPC may give up on a deadline a moment before ctx's own timer fires,
	// and a plugin measures the deadline it was sent on its own clock
	// (Node.js's in whole milliseconds), so it may call it passed a little
	// early: either way it is still the caller's deadline, not the plugin's.
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left <= 0 || (st.Code() == codes.DeadlineExceeded && left < deadlineSlack) {
			return fmt.Errorf("%s: %w", what, context.DeadlineExceeded)
		}
	}
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != ErrorDomain {
			continue
		}
		code, _ := parseErrorCode(info.GetReason())
		msg, ok := info.GetMetadata()["message"]
		if !ok {
			msg = st.Message()
		}
		e := &Error{Code: code, Field: info.GetMetadata()["field"], Message: msg}
		if st.Message() != e.Error() {
			return &remoteError{msg: st.Message(), err: e}
		}
		return e
	}
	// ctx is not done: a Canceled or DeadlineExceeded is the plugin's own,
	// or the connection's.
	var code ErrorCode
	switch st.Code() {
	case codes.Canceled:
		// Also what a call on a closed connection (a killed plugin) gets.
		code = Unavailable
	case codes.DeadlineExceeded:
		code = DeadlineExceeded
	case codes.InvalidArgument:
		code = InvalidArgument
		if configure {
			code = InvalidConfig
		}
	case codes.NotFound:
		code = NotFound
	case codes.Unavailable:
		code = Unavailable
	case codes.Unauthenticated:
		code = Unauthenticated
	case codes.PermissionDenied:
		code = PermissionDenied
	case codes.ResourceExhausted:
		code = ResourceExhausted
	case codes.Internal, codes.Unimplemented, codes.DataLoss:
		code = Internal
	default:
		code = Unknown
	}
	return &Error{Code: code, Message: fmt.Sprintf("%s: %s", what, st.Message())}
}
