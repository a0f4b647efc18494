package csvsource

import (
	"fmt"
	"strings"

	"github.com/cohortd/cohort/sdk"
)

// configError reports a config the user must change, as an *sdk.Error with
// code InvalidConfig. field is the dotted config key ("columns.Plan.type"),
// "" for the block as a whole; the message starts with it, so the text
// reads the same wherever it is shown.
func configError(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" && !strings.HasPrefix(msg, field) {
		msg = field + ": " + msg
	}
	return sdk.Errorf(sdk.InvalidConfig, field, "%s", msg)
}
