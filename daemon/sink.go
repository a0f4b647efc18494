package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// webhookSink commits what plugins return from webhooks.
type webhookSink struct{ db *storage.DB }

func (s *webhookSink) SourceBatch(ctx context.Context, instance string, b *sdk.Batch) error {
	if len(b.Events) > 0 || len(b.Consents) > 0 {
		// Refused rather than dropped: the caller retries once event and
		// consent ingestion is enabled.
		return errors.New("event and consent ingestion is not enabled in this version")
	}
	customers, err := ingest.Customers(b.Customers)
	if err != nil {
		return fmt.Errorf("source %q: %w", instance, err)
	}
	if err := s.db.UpsertCustomers(ctx, customers); err != nil {
		return err
	}
	return s.db.DeleteCustomers(ctx, b.Deletes)
}

func (s *webhookSink) DeliveryEvents(context.Context, string, []sdk.DeliveryEvent) error {
	return errors.New("delivery tracking is not enabled in this version")
}
