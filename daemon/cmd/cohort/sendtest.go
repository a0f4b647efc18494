package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cohortd/cohort/daemon"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/daemon/unsubscribe"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// testSubjectPrefix marks every test message's subject.
const testSubjectPrefix = "[test] "

func newSendTestCmd(g *globalFlags) *cobra.Command {
	var to, customer, fixture string
	cmd := &cobra.Command{
		Use:   "send-test CAMPAIGN --to ADDRESS",
		Short: "Render every variant of a campaign and send each to one address through the campaign's channel",
		Long: "Render every variant of a campaign (for a fixture customer, or a stored customer's traits with --customer) " +
			"and send each through the campaign's channel plugin to ADDRESS, the subject prefixed \"[test] \". " +
			"Only the sources (for the schema) and that channel's plugin are started; no outbox row is written, " +
			"no policy applies, and the daemon need not run.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageError{errors.New("send-test needs --to ADDRESS (an email address or E.164 phone number)")}
			}
			ctx := cmd.Context()
			w, err := openWorkspaceWith(ctx, g, cmd.ErrOrStderr(), true)
			if err != nil {
				return err
			}
			defer w.close()
			c := w.set.Campaign(args[0])
			if c == nil {
				return usageError{fmt.Errorf("no campaign %q in %s; campaigns: %s", args[0], w.cfg.Path(w.cfg.Rules.Dir), campaignNames(w.set))}
			}
			msgs, err := daemon.CompileMessages(w.cfg, w.set, w.schema)
			if err != nil {
				return usageError{fmt.Errorf("templates in %s:\n%w", w.cfg.Path(w.cfg.Rules.Dir), err)}
			}
			id, traits, err := w.testProfile(ctx, c, customer, fixture)
			if err != nil {
				return err
			}
			signer, err := w.testSigner(ctx)
			if err != nil {
				return err
			}

			// Start the campaign's channel instance, and only it.
			chCfg := *w.cfg
			chCfg.Sources = config.Instances{ByName: map[string]*config.Instance{}}
			chCfg.Channels = config.Instances{Names: []string{c.Channel}, ByName: map[string]*config.Instance{c.Channel: w.cfg.Channels.ByName[c.Channel]}}
			host := pluginhost.New(&chCfg, w.log, prometheus.NewRegistry(), pluginhost.Options{})
			sctx, cancel := context.WithTimeout(ctx, w.cfg.Plugins.StartTimeout+10*time.Second)
			defer cancel()
			host.Start(sctx)
			defer host.Close()
			if err := host.WaitStarted(sctx)[c.Channel]; err != nil {
				return fmt.Errorf("channel %s: %w", c.Channel, err)
			}
			client, err := host.Channel(c.Channel)
			if err != nil {
				return fmt.Errorf("channel %s: %w", c.Channel, err)
			}
			kind := host.Instance(c.Channel).ChannelInfo().Kind
			if kind == "" {
				kind = w.cfg.Channels.ByName[c.Channel].Kind
			}
			timeout := w.cfg.Channels.ByName[c.Channel].Timeout

			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "campaign %s: %d variants to %s through %s (%s), rendered for customer %s\n", c.Name, len(c.Variants), to, c.Channel, kind, id)
			failed := 0
			now := time.Now().UTC()
			for _, v := range c.Variants {
				data := message.Data{CustomerID: id, Campaign: c.Name, Variant: v.Name, Traits: traits, PostalAddress: w.cfg.Messages.PostalAddress}
				var headers []sdk.Header
				if kind != "webhook" {
					u := signer.URL(w.cfg.HTTP.PublicURL, unsubscribe.Claims{CustomerID: id, Kind: kind, Campaign: c.Name, Issued: now})
					data.UnsubscribeURL = u
					if kind == "email" {
						headers = unsubscribe.Headers(u)
					}
				}
				content, err := msgs.Render(c.Name, v.Name, data)
				if err != nil {
					failed++
					fmt.Fprintf(out, "  %s: not rendered: %v\n", v.Name, err)
					continue
				}
				m := sdk.Message{Key: testKey(), CustomerID: id, To: to, Subject: testSubjectPrefix + content.Subject,
					Text: content.Text, HTML: content.HTML, Headers: headers,
					Metadata: map[string]string{"campaign": c.Name, "variant": v.Name, "test": "true"}}
				if kind == "email" {
					m.From, m.ReplyTo = w.cfg.Messages.From, w.cfg.Messages.ReplyTo
				}
				cctx, ccancel := context.WithTimeout(ctx, timeout+5*time.Second)
				res, err := client.Send(cctx, []sdk.Message{m})
				ccancel()
				switch {
				case err != nil:
					failed++
					fmt.Fprintf(out, "  %s: send failed: %v\n", v.Name, err)
				case len(res) != 1:
					failed++
					fmt.Fprintf(out, "  %s: the channel answered %d results for 1 message\n", v.Name, len(res))
				case res[0].Status != sdk.Accepted:
					failed++
					fmt.Fprintf(out, "  %s: %s: %s %s (subject %q)\n", v.Name, res[0].Status, res[0].Code, res[0].Reason, m.Subject)
				default:
					pid := res[0].ProviderID
					if pid == "" {
						pid = "-"
					}
					fmt.Fprintf(out, "  %s: accepted (provider id %s, subject %q)\n", v.Name, pid, m.Subject)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d variants were not sent", failed, len(c.Variants))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "address to send every variant to (required)")
	cmd.Flags().StringVar(&customer, "customer", "", "render with this stored customer's traits (default: a fixture customer)")
	cmd.Flags().StringVar(&fixture, "fixture", "", "render with this fixture customer (default: the first one that expects this campaign, else the first)")
	return cmd
}

// testProfile returns the customer id and traits a test message renders
// with: a stored customer, a named fixture customer, or by default the
// first fixture customer expecting the campaign (else the first one).
func (w *workspace) testProfile(ctx context.Context, c *rules.Campaign, customer, fixture string) (string, map[string]any, error) {
	if customer != "" {
		if err := w.openDB(ctx); err != nil {
			return "", nil, err
		}
		vals, ok, err := w.storedTraits(ctx, customer)
		if err != nil {
			return "", nil, err
		}
		if !ok {
			return "", nil, usageError{fmt.Errorf("no customer %q in storage", customer)}
		}
		return customer, message.Traits(vals), nil
	}
	dir := filepath.Join(w.cfg.Path(w.cfg.Rules.Dir), rules.FixturesDir)
	fixtures, err := rules.LoadFixtures(dir, w.schema.Rules)
	if err != nil {
		return "", nil, usageError{fmt.Errorf("fixtures in %s:\n%w", dir, err)}
	}
	var first, expecting *rules.FixtureCustomer
	for _, f := range fixtures {
		for _, fc := range f.Customers {
			if fixture != "" && fc.ID == fixture {
				return fc.ID, message.Traits(fc.Traits), nil
			}
			if first == nil {
				first = fc
			}
			if _, ok := fc.Campaigns[c.Name]; ok && expecting == nil {
				expecting = fc
			}
		}
	}
	switch {
	case fixture != "":
		return "", nil, usageError{fmt.Errorf("no fixture customer %q in %s", fixture, dir)}
	case expecting != nil:
		return expecting.ID, message.Traits(expecting.Traits), nil
	case first != nil:
		return first.ID, message.Traits(first.Traits), nil
	}
	return "", nil, usageError{fmt.Errorf("no fixture customers in %s to render with: pass --customer ID", dir)}
}

// testSigner signs the test messages' unsubscribe links with the
// configured secret, else the one the daemon keeps in storage (read only),
// else a throwaway key (the daemon then rejects those links).
func (w *workspace) testSigner(ctx context.Context) (*unsubscribe.Signer, error) {
	secret := w.cfg.Messages.UnsubscribeSecret
	if secret == "" {
		if err := w.openDB(ctx); err != nil {
			return nil, err
		}
		s, err := w.db.Setting(ctx, "unsubscribe_secret")
		switch {
		case err == nil:
			secret = s
		case errors.Is(err, storage.ErrNotFound):
			var b [48]byte
			if _, err := rand.Read(b[:]); err != nil {
				return nil, err
			}
			secret = hex.EncodeToString(b[:])
		default:
			return nil, err
		}
	}
	return unsubscribe.NewSigner([]byte(secret), w.cfg.Messages.UnsubscribeTTL)
}

// testKey is a fresh key for a test message; it matches no outbox row, so
// the provider's delivery events for it are ignored.
func testKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "test-" + hex.EncodeToString(b[:])
}
