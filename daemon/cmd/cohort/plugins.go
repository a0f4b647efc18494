package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cohortd/cohort/daemon/logging"
	"github.com/cohortd/cohort/daemon/pluginhost"
)

func newPluginsCmd(g *globalFlags) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "Start every configured plugin instance and list its version, checksum and health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			level := "error"
			if verbose {
				level = "debug"
			}
			log := logging.New(cmd.ErrOrStderr(), level, cfg.Log.Format)
			h := pluginhost.New(cfg, log.With("cmd", "plugins"), prometheus.NewRegistry(), pluginhost.Options{})
			ctx, cancel := context.WithTimeout(cmd.Context(), cfg.Plugins.StartTimeout+time.Minute)
			defer cancel()
			h.Start(ctx)
			defer h.Close()
			errs := h.WaitStarted(ctx)
			printStatuses(cmd, h.Statuses())
			if len(errs) > 0 {
				for _, s := range h.Statuses() {
					if err := errs[s.Name]; err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "%v\n", err)
					}
				}
				return fmt.Errorf("%d of %d plugin instances are not healthy", len(errs), len(h.Statuses()))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show plugin logs")
	return cmd
}

func printStatuses(cmd *cobra.Command, sts []pluginhost.Status) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tROLE\tKIND\tVERSION\tHEALTH\tSHA256\tBINARY")
	for _, s := range sts {
		health := string(s.State)
		if s.State == pluginhost.StateRunning {
			health = "healthy"
		}
		kind := s.Kind
		if kind == "" {
			kind = "-"
		}
		version := s.Version
		if version == "" {
			version = "-"
		}
		sum := s.SHA256
		if sum == "" {
			sum = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Role, kind, version, health, sum, s.Path)
	}
	tw.Flush()
}
