// Command cohort is the Cohort daemon and its operator tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cohortd/cohort/daemon"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/logging"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the daemon failed while running
	exitInput   = 2 // bad config or flags, or a resource that cannot be reached at start
)

// usageError marks errors in the command line or configuration (status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr)
}

// runIO is run with a standard input (forget's confirmation reads it).
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "cohort:", err)
	var ue usageError
	var se *daemon.StartupError
	if errors.As(err, &ue) || errors.As(err, &se) {
		return exitInput
	}
	return exitFailure
}

type globalFlags struct {
	config string
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "cohort",
		Short:         "Customer segmentation and campaign daemon",
		Long:          "Cohort keeps customer segments current from data-source plugins and sends segment campaigns through channel plugins.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.config, "config", "config.yaml", "configuration file")
	root.AddCommand(newRunCmd(g), newCheckCmd(g), newPluginsCmd(g), newPreviewCmd(g), newExplainCmd(g), newReportCmd(g), newSendTestCmd(g), newForgetCmd(g), newVersionCmd())
	return root
}

// loadConfig loads the --config file; its errors are usage errors.
func (g *globalFlags) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(g.config)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

func newRunCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the daemon until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			log := logging.New(cmd.ErrOrStderr(), cfg.Log.Level, cfg.Log.Format)
			return daemon.New(cfg, log).Run(cmd.Context())
		},
	}
}

func newCheckCmd(g *globalFlags) *cobra.Command {
	var configOnly bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration, compile the rules against the sources' schemas, and run the fixtures",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (storage %s, %d sources, %d channels, timezone %s)\n",
				cfg.File, cfg.Storage.Driver, len(cfg.Sources.Names), len(cfg.Channels.Names), cfg.Timezone)
			if configOnly {
				return nil
			}
			return checkRules(cmd, g)
		},
	}
	cmd.Flags().BoolVar(&configOnly, "config-only", false, "validate config.yaml only (no plugins, rules or fixtures)")
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "cohort", daemon.Version())
		},
	}
}
