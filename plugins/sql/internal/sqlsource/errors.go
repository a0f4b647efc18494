package sqlsource

import (
	"fmt"
	"strings"

	"github.com/cohortd/cohort/sdk"
)

// configError reports a config the user must change, as an *sdk.Error with
// code InvalidConfig. field is the dotted config key ("columns.plan.type"),
// "" for the block as a whole; the message starts with it, so the text reads
// the same wherever it is shown.
func configError(field, format string, args ...any) error {
	return fieldError(sdk.InvalidConfig, field, format, args...)
}

// fieldError is configError with another code (Unavailable for a server
// that cannot be reached, Unauthenticated for refused credentials...).
func fieldError(code sdk.ErrorCode, field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" && !strings.HasPrefix(msg, field) {
		msg = field + ": " + msg
	}
	return sdk.Errorf(code, field, "%s", msg)
}
