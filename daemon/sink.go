package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
)

// webhookSink commits what plugins return from webhooks.
type webhookSink struct {
	ingest *ingest.Ingester

	mu         sync.Mutex
	validators map[string]*ingest.Validator
}

func (s *webhookSink) setValidator(source string, v *ingest.Validator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.validators[source] = v
}

// SourceBatch commits a source webhook's data like a pulled batch, except
// that it never moves the source's pull cursor.
func (s *webhookSink) SourceBatch(ctx context.Context, instance string, b *sdk.Batch) error {
	s.mu.Lock()
	v := s.validators[instance]
	s.mu.Unlock()
	if v == nil {
		return fmt.Errorf("source %q is not running yet", instance)
	}
	cp := *b
	cp.Cursor, cp.CaughtUp = "", false
	return s.ingest.Commit(ctx, v, &cp)
}

func (s *webhookSink) DeliveryEvents(context.Context, string, []sdk.DeliveryEvent) error {
	// Refused rather than dropped: providers retry until delivery tracking
	// (the outbox) is enabled.
	return errors.New("delivery tracking is not enabled in this version")
}
