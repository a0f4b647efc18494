package faults

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cohortd/cohort/plugins/sendgrid/sgserver"
	"github.com/cohortd/cohort/storage"
)

// The channel's shape: at a crash at most concurrency x batch rows may be
// unknown.
const (
	concurrency = 4
	batch       = 50
	campaign    = "blast"
	channel     = "email"
)

// bins holds the binaries TestMain builds.
var bins struct {
	cohort, csv, sendgrid string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cohort-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bins.cohort = filepath.Join(dir, "cohort")
		bins.csv = filepath.Join(dir, "plugins", "csv")
		bins.sendgrid = filepath.Join(dir, "plugins", "sendgrid")
		for _, b := range []struct{ out, pkg string }{
			{bins.cohort, "github.com/cohortd/cohort/daemon/cmd/cohort"},
			{bins.csv, "github.com/cohortd/cohort/plugins/csv"},
			{bins.sendgrid, "github.com/cohortd/cohort/plugins/sendgrid"},
		} {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "faults: go build %s: %v\n", b.pkg, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// envN reads a positive campaign size from the environment.
func envN(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s=%q: want a positive number", name, v)
	require.Positive(t, n, "%s=%q: want a positive number", name, v)
	return n
}

// setup is one test's world: a local SendGrid, a CRM export of n
// consenting customers who are all in one segment, a campaign with two
// variants that backfills them all, and a config running it through the
// sendgrid plugin.
type setup struct {
	t          *testing.T
	n          int
	dir        string
	cfg        string
	addr       string
	sg         *sgserver.Server
	ids        []string
	db         *storage.DB
	daemonRuns int
}

func newSetup(t *testing.T, n int, faults sgserver.Faults) *setup {
	t.Helper()
	s := &setup{t: t, n: n, dir: t.TempDir()}
	sg, err := sgserver.Start(sgserver.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { sg.Close() })
	sg.SetFaults(faults)
	s.sg = sg

	var csv strings.Builder
	csv.WriteString("id,first_name,email,email_opt_in\n")
	for i := range n {
		id := fmt.Sprintf("c%06d", i)
		s.ids = append(s.ids, id)
		fmt.Fprintf(&csv, "%s,Ana,%s@example.com,yes\n", id, id)
	}
	s.write("customers.csv", csv.String())
	s.write("rules/segments.yaml", `version: 1
refresh: "0 3 * * *"
segments:
  everyone:
    when: email != ""
`)
	s.write("rules/campaigns.yaml", `version: 1
campaigns:
  `+campaign+`:
    segment: everyone
    trigger: enter
    backfill: true
    channel: `+channel+`
    variants:
      a: {weight: 50, subject: "Hello {{.first_name}}", html: templates/a.html}
      b: {weight: 50, subject: "Hi {{.first_name}}", text: templates/b.txt}
`)
	s.write("rules/templates/a.html", `<p>Hello {{.first_name}}</p><p><a href="{{unsubscribe_url}}">Unsubscribe</a> {{postal_address}}</p>`)
	s.write("rules/templates/b.txt", "Hi {{.first_name}}\nUnsubscribe: {{unsubscribe_url}}\n{{postal_address}}\n")

	s.addr = freeAddr(t)
	s.cfg = s.write("config.yaml", fmt.Sprintf(`storage:
  driver: sqlite
  dsn: cohort.db
http:
  listen: %[1]s
  public_url: http://%[1]s
timezone: UTC
rules:
  dir: rules
log:
  level: info
  format: json
messages:
  from: "Example Shop <news@example.com>"
  postal_address: "1 Example Street, Springfield"
  consent: opt_in
sources:
  crm:
    plugin: %[2]s
    config:
      path: customers.csv
      id_column: id
      email: email
      consent: {column: email_opt_in}
channels:
  %[3]s:
    plugin: %[4]s
    concurrency: %[5]d
    batch: %[6]d
    timeout: 10s
    on_unknown: report
    config:
      api_key: %[7]s
      base_url: %[8]s
      webhook_public_key: %[9]s
      parallel: 2
      timeout: 5s
`, s.addr, bins.csv, channel, bins.sendgrid, concurrency, batch, sg.APIKey(), sg.URL, sg.PublicKeyBase64()))
	return s
}

func (s *setup) write(name, body string) string {
	s.t.Helper()
	p := filepath.Join(s.dir, name)
	require.NoError(s.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(s.t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

// daemon is one run of `cohort run`.
type daemon struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs the daemon and waits until it serves /readyz; the test's own
// database handle is opened then (after the daemon's migrations).
func (s *setup) start() *daemon {
	s.t.Helper()
	s.daemonRuns++
	d := &daemon{log: filepath.Join(s.dir, fmt.Sprintf("daemon-%d.log", s.daemonRuns)), done: make(chan struct{})}
	logf, err := os.Create(d.log)
	require.NoError(s.t, err)
	d.cmd = exec.Command(bins.cohort, "run", "--config", s.cfg)
	d.cmd.Dir = s.dir
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Should the test binary die (a -timeout panic), the daemon dies too.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(s.t, d.cmd.Start())
	go func() {
		d.err = d.cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	s.t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if s.t.Failed() {
			s.t.Logf("daemon log %s (last lines):\n%s", d.log, tail(d.log, 40))
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	s.waitFor(2*time.Minute, "the daemon to serve /readyz", func() bool {
		select {
		case <-d.done:
			s.t.Fatalf("the daemon exited before it was ready (%v); log:\n%s", d.err, tail(d.log, 40))
		default:
		}
		resp, err := client.Get("http://" + s.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if s.db == nil {
		db, err := storage.Open(context.Background(), storage.Config{Driver: storage.SQLite, DSN: filepath.Join(s.dir, "cohort.db")})
		require.NoError(s.t, err)
		s.t.Cleanup(func() { db.Close() })
		s.db = db
	}
	return d
}

// kill SIGKILLs the daemon and waits until it and its plugins are gone.
func (s *setup) kill(d *daemon) {
	s.t.Helper()
	kids := children(d.cmd.Process.Pid, "")
	require.NotEmpty(s.t, kids, "the daemon runs its plugins as child processes")
	require.NoError(s.t, d.cmd.Process.Signal(syscall.SIGKILL))
	<-d.done
	s.waitFor(time.Minute, "the killed daemon's plugins to die with it", func() bool {
		for _, pid := range kids {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

// stop stops the daemon with SIGTERM and requires a clean exit.
func (s *setup) stop(d *daemon) {
	s.t.Helper()
	require.NoError(s.t, d.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-d.done:
		require.NoError(s.t, d.err, "cohort run must exit 0 after SIGTERM; log:\n%s", tail(d.log, 40))
	case <-time.After(2 * time.Minute):
		s.t.Fatalf("the daemon did not stop within 2 minutes of SIGTERM")
	}
}

// waitAccepted waits until the provider accepted at least n messages.
func (s *setup) waitAccepted(n int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err := s.sg.WaitAccepted(ctx, n)
	require.NoError(s.t, err)
}

// waitSettled waits until the campaign's n rows exist and none is pending
// or sending, and returns the counts by state.
func (s *setup) waitSettled(within time.Duration) map[string]int64 {
	s.t.Helper()
	var counts map[string]int64
	s.waitFor(within, "every outbox row to settle", func() bool {
		c, err := s.db.OutboxCounts(context.Background(), campaign)
		if err != nil {
			return false
		}
		counts = c
		var total int64
		for _, v := range c {
			total += v
		}
		return total == int64(s.n) && c[storage.OutboxPending] == 0 && c[storage.OutboxSending] == 0
	}, func() string { return fmt.Sprintf("counts %v", counts) })
	return counts
}

// rows returns every customer's outbox row, requiring exactly one each.
func (s *setup) rows() map[string]storage.OutboxRow {
	s.t.Helper()
	out := make(map[string]storage.OutboxRow, s.n)
	for _, id := range s.ids {
		rs, err := s.db.OutboxOf(context.Background(), id, 10)
		require.NoError(s.t, err)
		require.Len(s.t, rs, 1, "customer %s must have exactly one outbox row", id)
		out[rs[0].Key] = rs[0]
	}
	return out
}

// checkOutcomes checks the promises of DESIGN.md section 6 after a crash:
// one terminal outcome per row, no duplicate at the provider, at most
// concurrency x batch unknowns, every sent row at the provider, and every
// row the provider got sent or unknown. Then it posts the provider's signed
// delivery events to the daemon: the unknowns the provider had become
// sent, the rest stay unknown and are reported with a reason.
func (s *setup) checkOutcomes() {
	s.t.Helper()
	t := s.t
	rows := s.rows()
	require.Empty(t, s.sg.Duplicates(), "the provider must never receive a message twice")
	got := s.sg.CountByKey()

	var resolvable, unreached []string
	for key, r := range rows {
		switch r.State {
		case storage.OutboxSent:
			require.Equal(t, 1, got[key], "row %s is sent, so the provider must have it once", key)
			require.NotEmpty(t, r.ProviderID, "sent row %s must carry the provider id", key)
		case storage.OutboxUnknown:
			require.NotEmpty(t, r.Reason, "unknown row %s must say why", key)
			if got[key] > 0 {
				resolvable = append(resolvable, key)
			} else {
				unreached = append(unreached, key)
			}
		default:
			t.Fatalf("row %s (customer %s) ended %s (%s): every consenting recipient must end sent or, after the crash, unknown",
				key, r.CustomerID, r.State, r.Reason)
		}
	}
	for key := range got {
		_, ok := rows[key]
		require.True(t, ok, "the provider got key %s, which is no outbox row", key)
	}
	unknown := len(resolvable) + len(unreached)
	t.Logf("%d rows: %d sent, %d unknown (%d reached the provider, %d did not)", len(rows), len(rows)-unknown, unknown, len(resolvable), len(unreached))
	require.LessOrEqual(t, unknown, concurrency*batch, "at a crash at most concurrency x batch rows may be unknown")
	require.Positive(t, unknown, "the fault struck mid-send, so some calls were in flight and their rows must be unknown")

	// SendGrid posts events for everything it accepted; post them in
	// chunks as its Event Webhook does.
	events := s.sg.EventsFor(sgserver.EventOptions{})
	url := "http://" + s.addr + "/webhooks/" + channel
	for lo := 0; lo < len(events); lo += 1000 {
		hi := min(lo+1000, len(events))
		status, err := s.sg.PostEvents(context.Background(), url, events[lo:hi])
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status/100*100, "the daemon must take signed delivery events (got %d)", status)
	}
	s.waitFor(2*time.Minute, "the unknowns the provider had to be resolved by its events", func() bool {
		rs, err := s.db.OutboxByKeys(context.Background(), resolvable)
		if err != nil {
			return false
		}
		for _, k := range resolvable {
			if rs[k].State != storage.OutboxSent {
				return false
			}
		}
		return true
	})
	rs, err := s.db.OutboxByKeys(context.Background(), unreached)
	require.NoError(t, err)
	for _, k := range unreached {
		require.Equal(t, storage.OutboxUnknown, rs[k].State, "row %s never reached the provider: it must stay unknown", k)
		require.NotEmpty(t, rs[k].Reason, "row %s must be reported with a reason", k)
	}
	counts, err := s.db.OutboxCounts(context.Background(), campaign)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{storage.OutboxSent: int64(s.n - len(unreached)), storage.OutboxUnknown: int64(len(unreached))}, nonZero(counts))
	require.Empty(t, s.sg.Duplicates())
}

// TestDaemonKilledMidCampaign SIGKILLs the daemon (its plugins die with it)
// once a quarter of the campaign reached the provider, restarts it on the
// same database and lets it finish.
func TestDaemonKilledMidCampaign(t *testing.T) {
	n := envN(t, "COHORT_FAULT_N", 2000)
	// Latency keeps the calls in flight long enough to be cut.
	s := newSetup(t, n, sgserver.Faults{Latency: 20 * time.Millisecond})
	d := s.start()
	s.waitAccepted(n / 4)
	s.kill(d)
	atKill := len(s.sg.CountByKey())
	t.Logf("daemon killed with %d of %d messages at the provider", atKill, n)
	require.Less(t, atKill, n, "the kill must come mid-campaign")

	d = s.start()
	s.waitSettled(5 * time.Minute)
	s.checkOutcomes()
	s.stop(d)
}

// TestChannelPluginKilledMidSend SIGKILLs the sendgrid plugin process while
// the campaign is sending: the daemon starts a new one and finishes.
func TestChannelPluginKilledMidSend(t *testing.T) {
	n := envN(t, "COHORT_FAULT_N", 2000)
	s := newSetup(t, n, sgserver.Faults{Latency: 20 * time.Millisecond})
	d := s.start()
	s.waitAccepted(n / 4)
	pids := children(d.cmd.Process.Pid, bins.sendgrid)
	require.Len(t, pids, 1, "one sendgrid plugin process")
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	t.Logf("plugin %d killed with %d of %d messages at the provider", pids[0], len(s.sg.CountByKey()), n)
	s.waitFor(2*time.Minute, "the daemon to start a new sendgrid plugin", func() bool {
		now := children(d.cmd.Process.Pid, bins.sendgrid)
		return len(now) == 1 && now[0] != pids[0]
	})
	s.waitSettled(5 * time.Minute)
	s.checkOutcomes()
	s.stop(d)
}

// TestRateLimitStorm answers half of the Mail Send requests 429 with
// X-RateLimit-Reset one second ahead: every message is delivered
// eventually, none twice.
//
// "Eventually" has a bound: a message is refused about log2(n) times in a
// row at worst (0.5^k of n messages), and SendGrid said to come back in a
// second each time, so the campaign settles within a minute or two at any
// size here. A sender that instead doubles its own wait on each refusal
// (ignoring that the provider said one second) leaves the unlucky tail
// waiting 2^k seconds, i.e. about n seconds: far past the deadline.
func TestRateLimitStorm(t *testing.T) {
	n := envN(t, "COHORT_FAULT_STORM_N", 2000)
	// The default messages.max_attempts: rate-limit refusals do not count toward
	// it, so the storm delays messages but fails none.
	s := newSetup(t, n, sgserver.Faults{RateLimit: sgserver.RateLimitFault{
		Pick: sgserver.Pick{Fraction: 0.5}, Headers: true, Reset: time.Second}})
	d := s.start()
	start := time.Now()
	counts := s.waitSettled(5 * time.Minute)
	t.Logf("%d messages settled in %s; provider stats %+v", n, time.Since(start).Round(time.Millisecond), s.sg.Stats())
	require.Equal(t, map[string]int64{storage.OutboxSent: int64(n)}, nonZero(counts), "every message must be delivered eventually")
	require.Empty(t, s.sg.Duplicates(), "the provider must never receive a message twice")
	got := s.sg.CountByKey()
	require.Len(t, got, n)
	for key, r := range s.rows() {
		require.Equal(t, 1, got[key], "row %s", key)
		require.Equal(t, storage.OutboxSent, r.State)
	}
	st := s.sg.Stats()
	require.Greater(t, st.RateLimited, n/4, "the storm must have struck about half the requests")
	s.stop(d)
}

// waitFor polls cond every 100 ms until it holds, failing after within.
func (s *setup) waitFor(within time.Duration, what string, cond func() bool, detail ...func() string) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, d := range detail {
				msg += "; " + d()
			}
			s.t.Fatalf("timed out after %s waiting for %s%s", within, what, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// children lists the live child processes of ppid, those running exe
// when it is set.
func children(ppid int, exe string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := stat(pid)
		if !ok || st.ppid != ppid || st.state == 'Z' {
			continue
		}
		if exe != "" {
			if p, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || p != exe {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

// alive says whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, ok := stat(pid)
	return ok && st.state != 'Z'
}

type procStat struct {
	state byte
	ppid  int
}

func stat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0][0], ppid: ppid}, true
}

func nonZero(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
