package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/ingest"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// storedTraits reads a customer's stored traits, typed by the schema; ok is
// false when storage has no such customer.
func (w *workspace) storedTraits(ctx context.Context, id string) (map[string]sdk.Value, bool, error) {
	c, err := w.db.GetCustomer(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	vals, _, err := ingest.TraitsFromJSON(c.Traits, w.schema.Rules.Traits)
	if err != nil {
		return nil, true, fmt.Errorf("customer %q: stored traits: %w", id, err)
	}
	return vals, true, nil
}

// contactFields are the trait names every source declares as an email or
// phone contact, sorted and without duplicates.
func (w *workspace) contactFields() []string {
	seen := map[string]bool{}
	var out []string
	for _, info := range w.schema.Sources {
		for _, f := range []string{info.Contact.Email, info.Contact.Phone} {
			if f != "" && !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	sort.Strings(out)
	return out
}

func newForgetCmd(g *globalFlags) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "forget CUSTOMER",
		Short: "Erase a customer (GDPR Art. 17), keeping only hashed suppressions of their id and addresses",
		Long: "Erase a customer (GDPR Art. 17): the profile, events, consent records, memberships, assignments, " +
			"outbox rows and delivery events. Hashed suppression entries of the customer id and of every contact address " +
			"(the sources' email and phone fields) are kept, so a source that brings the customer back cannot make Cohort message them. " +
			"Asks for confirmation unless --yes is given. Stop the daemon's sources from re-importing the customer too.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			id := args[0]
			w, err := openWorkspace(ctx, g, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer w.close()
			if err := w.openDB(ctx); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			vals, found, err := w.storedTraits(ctx, id)
			if err != nil {
				return err
			}
			var addrs, fields []string
			for _, f := range w.contactFields() {
				if v, ok := vals[f]; ok && v.Type == sdk.TypeString && v.Str != "" {
					addrs = append(addrs, v.Str)
					fields = append(fields, f)
				}
			}
			consents, err := w.db.Consents(ctx, id)
			if err != nil {
				return err
			}
			rows, err := w.db.OutboxOf(ctx, id, 1<<30)
			if err != nil {
				return err
			}
			var assigned []string
			for _, c := range w.set.Campaigns() {
				if _, err := w.db.Assignment(ctx, c.Name, id); err == nil {
					assigned = append(assigned, c.Name)
				} else if !errors.Is(err, storage.ErrNotFound) {
					return err
				}
			}
			if !yes {
				fmt.Fprintf(out, "Erase customer %q and everything stored about them? This cannot be undone. [y/N] ", id)
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					fmt.Fprintln(out)
					return usageError{fmt.Errorf("customer %q not erased: confirm with y, or pass --yes", id)}
				}
			}
			erased, err := campaign.Forget(ctx, w.db, id, addrs, time.Now().UTC())
			if err != nil {
				return err
			}
			if !erased && !found {
				fmt.Fprintf(out, "customer %s: nothing stored; suppressed the id anyway\n", id)
				return nil
			}
			fmt.Fprintf(out, "customer %s erased:\n", id)
			fmt.Fprintf(out, "  profile: %s\n", yesNo(found))
			fmt.Fprintf(out, "  consent records: %d\n", len(consents))
			fmt.Fprintf(out, "  outbox rows: %d (and their delivery events)\n", len(rows))
			if len(assigned) > 0 {
				fmt.Fprintf(out, "  campaign assignments: %s\n", strings.Join(assigned, ", "))
			}
			fmt.Fprintln(out, "  events, rollups, segment memberships and changes: erased")
			kept := "customer id"
			if len(fields) > 0 {
				kept += ", " + strings.Join(fields, ", ")
			}
			fmt.Fprintf(out, "  kept: hashed suppressions of the %s (all channel kinds)\n", kept)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no (not stored)"
}
