// Command benchreport runs Cohort's benchmarks (make bench) and prints each
// figure beside the baseline measured in the same run.
//
// Convention: a benchmark compared against a baseline has two sub-benchmarks,
// ".../subject" and ".../baseline", reporting the same unit (ns/op or a custom
// metric such as rec/s). Targets from the issues are listed in targets below;
// a figure that misses its target is marked MISS and makes the command exit 1.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// target is what an issue asks of a subject relative to its baseline.
type target struct {
	unit string
	// higher is true when more is better (throughput), false for costs (ns/op, B/op).
	higher bool
	// ratio is the least (higher) or most (lower) subject/baseline allowed; 0 = none.
	ratio float64
	// absolute is the least (higher) or most (lower) subject figure allowed; 0 = none.
	absolute float64
	note     string
}

var targets = map[string]target{
	"BenchmarkPullStream": {unit: "rec/s", higher: true, ratio: 0.8, absolute: 1.5e6,
		note: "issue 3: source plugin process vs in-process connection, batches of 1000"},
	"BenchmarkFirstImport": {unit: "s", absolute: 15,
		note: "issue 4: 1M customers from the csv plugin into SQLite; baseline = bare upserts of the same rows"},
	"BenchmarkRuleEval": {unit: "ns/rec", ratio: 1.5,
		note: "issue 4: compiled rule vs hand-written Go predicate over the same columns"},
	"BenchmarkProfileMemory": {unit: "B/customer", absolute: 400,
		note: "issue 4: heap in use after GC per customer, profiles and rollups loaded; baseline = a plain struct per customer"},
	"BenchmarkEventToMembership": {unit: "p99-ms", absolute: 250,
		note: "issue 4: track webhook to committed segment change at 1,000 events/s; baseline = the same calls' webhook round trip"},
	"BenchmarkFullPass": {unit: "s", absolute: 0.3,
		note: "issue 4: 10 rules over 1M profiles, 1% diff persisted to SQLite"},
	"BenchmarkCampaignSMTP": {unit: "msgs/s", higher: true, ratio: 0.7,
		note: "issue 5: outbox -> dispatcher -> plugins/smtp process -> SMTP sink (replies batched per pipelined group, as Postfix sends them), outcomes recorded (sqlite, postgres); baseline = bare go-smtp client (smtpsink.BareSend), same connections"},
	"BenchmarkCampaignSendGrid": {unit: "msgs/s", higher: true, ratio: 0.7,
		note: "issue 5: outbox -> dispatcher -> plugins/sendgrid process -> sgserver, outcomes recorded (sqlite, postgres); baseline = sendgrid-go direct (sgbench.DirectSend), same requests in flight"},
}

type result struct {
	name    string
	metrics map[string]float64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func main() {
	benchtime := flag.String("benchtime", "1x", "go test -benchtime")
	pattern := flag.String("bench", ".", "go test -bench pattern")
	pkgs := flag.String("pkgs", "./...", "packages")
	flag.Parse()

	// -p 1: one package's benchmarks at a time. By default go test runs
	// as many packages at once as there are cores, and a benchmark sharing
	// the 2 cores with another package's measures neither.
	args := []string{"test", "-p", "1", "-run", "^$", "-bench", *pattern, "-benchtime", *benchtime, "-benchmem", "-timeout", "60m"}
	args = append(args, strings.Fields(*pkgs)...)
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fatal(err)
	}
	if err := cmd.Start(); err != nil {
		fatal(err)
	}
	results := parse(io.TeeReader(out, os.Stdout))
	werr := cmd.Wait()
	fmt.Println()
	ok := report(os.Stdout, results)
	if werr != nil {
		fatal(fmt.Errorf("go test: %w", werr))
	}
	if !ok {
		os.Exit(1)
	}
}

func parse(r io.Reader) map[string]result {
	res := map[string]result{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		rs := result{name: m[1], metrics: map[string]float64{}}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				rs.metrics[f[i+1]] = v
			}
		}
		res[m[1]] = rs
	}
	return res
}

// report prints subject vs baseline for every pair; false if a target is missed.
func report(w io.Writer, res map[string]result) bool {
	var parents []string
	for name := range res {
		if p, ok := strings.CutSuffix(name, "/subject"); ok {
			if _, has := res[p+"/baseline"]; has {
				parents = append(parents, p)
			}
		}
	}
	sort.Strings(parents)
	if len(parents) == 0 {
		fmt.Fprintln(w, "no subject/baseline pairs found")
		return true
	}
	fmt.Fprintln(w, "FIGURE BESIDE BASELINE (same run)")
	ok := true
	for _, p := range parents {
		s, b := res[p+"/subject"], res[p+"/baseline"]
		top := p
		if i := strings.Index(p, "/"); i > 0 {
			top = p[:i]
		}
		tg, hasTarget := targets[top]
		units := []string{tg.unit}
		if !hasTarget {
			units = []string{"ns/op"}
		}
		for _, u := range units {
			sv, bv := s.metrics[u], b.metrics[u]
			if bv == 0 {
				continue
			}
			ratio := sv / bv
			verdict := ""
			if hasTarget {
				pass := true
				if tg.higher {
					pass = (tg.ratio == 0 || ratio >= tg.ratio) && (tg.absolute == 0 || sv >= tg.absolute)
				} else {
					pass = (tg.ratio == 0 || ratio <= tg.ratio) && (tg.absolute == 0 || sv <= tg.absolute)
				}
				verdict = "ok"
				if !pass {
					verdict, ok = "MISS", false
				}
				verdict = fmt.Sprintf("%s (target %s)", verdict, describe(tg))
			}
			fmt.Fprintf(w, "%-48s %14s %-6s  baseline %14s  ratio %.2fx  %s\n", p, human(sv), u, human(bv), ratio, verdict)
		}
	}
	return ok
}

func describe(t target) string {
	var parts []string
	op := "<="
	if t.higher {
		op = ">="
	}
	if t.ratio != 0 {
		parts = append(parts, fmt.Sprintf("%s %.2fx", op, t.ratio))
	}
	if t.absolute != 0 {
		parts = append(parts, fmt.Sprintf("%s %s %s", op, human(t.absolute), t.unit))
	}
	return strings.Join(parts, ", ") + "; " + t.note
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchreport:", err)
	os.Exit(2)
}
