package sdktest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/cohortd/cohort/sdk"
)

// identifier is what trait names must look like to be usable in rules.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func configureRequest(config []byte) sdk.ConfigureRequest {
	return sdk.ConfigureRequest{
		Instance:    "conformance",
		Config:      config,
		PublicURL:   "https://cohort.example.com",
		WebhookPath: "/webhooks/conformance",
	}
}

func checkBadConfigs(t *testing.T, bad [][]byte, configure func(context.Context, sdk.ConfigureRequest) error) {
	t.Helper()
	if len(bad) == 0 {
		t.Skip("no BadConfigs given")
	}
	for i, config := range bad {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
			defer cancel()
			err := configure(ctx, configureRequest(config))
			if err == nil {
				t.Fatalf("Configure accepted bad config %d:\n%s", i, config)
			}
			if err.Error() == "" {
				t.Fatalf("Configure rejected bad config %d with an empty message", i)
			}
			var e *sdk.Error
			if !errors.As(err, &e) || e.Code != sdk.InvalidConfig {
				t.Logf("hint: reject config with sdk.Errorf(sdk.InvalidConfig, field, ...); got %v", err)
			}
		})
	}
}

func checkNameVersion(t *testing.T, name, version string) {
	t.Helper()
	if name == "" {
		t.Error("Info.Name is empty")
	}
	if version == "" {
		t.Error("Info.Version is empty")
	}
}

func checkStatus(t *testing.T, status int) {
	t.Helper()
	if status < 100 || status > 599 {
		t.Errorf("webhook response status %d, want 100..599", status)
	}
}

// checkPrompt calls f and checks that it returns within promptly; with
// mustFail, that it returns an error, a context error.
func checkPrompt(t *testing.T, what string, f func() error, mustFail bool) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err == nil {
			if mustFail {
				t.Errorf("%s returned no error", what)
			}
			return
		}
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s returned %v, want a context error", what, err)
		}
	case <-time.After(promptly):
		t.Errorf("%s did not return within %v", what, promptly)
	}
}
