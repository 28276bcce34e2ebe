#!/usr/bin/env python3
"""Front end of kincir-bench: runs it, then compares with an earlier run and writes a report.

    kincir_bench.py BINARY [kincir-bench options] [--compare FILE] [--report DIR]

Every option but --compare and --report goes to BINARY (see `BINARY --help`). With --compare or
--report the run's JSON is written (to --json FILE if given, else to a temporary file).

--compare FILE  prints, per workload present in both runs, the earlier and the new median and
                their ratio (new / earlier for rates, so above 1 is faster; earlier / new for
                latencies, so above 1 is also better), flagging changes beyond the noise band.
--report DIR    writes DIR/results.md (the table in Markdown, the targets, the machine),
                DIR/results.json, and DIR/throughput.svg drawn by gnuplot (Debian: gnuplot-nox).

Only the Python standard library is used. `--report` and `--compare` also work on an existing
JSON without running anything: `kincir_bench.py --from FILE --report DIR`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

NOISE = 0.10  # changes within ±10 % are called "same": medians on a shared 2-core machine


def si(v):
    if v is None:
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= factor:
            return f"{v / factor:.2f} {prefix}"
    return f"{v:.0f}"


def duration(seconds):
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e9:.0f} ns"


def latency(ns):
    return "-" if ns is None else duration(ns * 1e-9)


def memory(b):
    if b is None:
        return "-"
    return f"+{b / 1e3:.0f} kB" if b < 1e6 else f"+{b / 1e6:.1f} MB"


def rate_text(r):
    if r["failed"]:
        return "failed"
    if not r["unit"] or r["rate"] is None:
        return "-"
    return f"{si(r['rate'])} {r['unit']}"


def note(r):
    if r.get("cpu_us_per_msg") is not None:  # the RabbitMQ rows and their rabbitmq-c peer
        text = f"CPU {r['cpu_us_per_msg']:.2f} us/msg"
        if r.get("ratio_rabbitmq_c") is not None:
            text += (f"; ÷ rabbitmq-c: {r['ratio_rabbitmq_c']:.2f}x msg/s, "
                     f"{r['cpu_ratio_rabbitmq_c']:.2f}x CPU/msg")
        return text
    if r.get("overhead") is not None:
        return f"{r['overhead'] * 100:+.1f} % vs plain (same runs)"
    if r.get("payload_bytes_per_s") is not None:
        return f"{r['payload_bytes_per_s'] / 1e6:.0f} MB/s of payload"
    if r.get("p999_ns") is not None:
        return f"p99.9 {latency(r['p999_ns'])}, max {latency(r['max_ns'])}"
    return ""


def machine_line(ctx):
    return (f"{ctx.get('cpu', '?')}, {ctx.get('logical_cpus', '?')} logical CPUs, {ctx.get('memory', '?')} RAM, "
            f"{ctx.get('os', '?')}, {ctx.get('kernel', '?')}; {ctx.get('compiler', '?')}, "
            f"{ctx.get('build_type', '?')} build; load average before {ctx.get('load_average_before', '?')}, "
            f"after {ctx.get('load_average_after', '?')}")


# --- compare -------------------------------------------------------------------------------------

def comparable(r):
    """(value, higher_is_better, text) pairs of one result."""
    out = []
    if r["failed"]:
        return out
    if r["unit"] and r["rate"] is not None:
        out.append(("rate", r["rate"], True, rate_text(r)))
    for key in ("p50_ns", "p99_ns"):
        if r.get(key) is not None:
            out.append((key[:3], r[key], False, latency(r[key])))
    if r.get("overhead") is not None:
        out.append(("overhead", r["overhead"], False, f"{r['overhead'] * 100:+.1f} %"))
    return out


def compare(old, new):
    """Rows: workload, measure, earlier, now, ratio (better > 1), verdict."""
    earlier = {r["name"]: r for r in old["results"]}
    rows = []
    for r in new["results"]:
        o = earlier.get(r["name"])
        if o is None:
            continue
        before = {m: (v, t) for m, v, _, t in comparable(o)}
        for measure, value, higher_better, text in comparable(r):
            if measure not in before:
                continue
            old_value, old_text = before[measure]
            if measure == "overhead":  # a difference of percentages, not a ratio
                delta = value - old_value
                verdict = "same" if abs(delta) <= 0.03 else ("better" if delta < 0 else "WORSE")
                rows.append((r["name"], measure, old_text, text, f"{delta * 100:+.1f} pt", verdict))
                continue
            if not old_value or not value:
                continue
            ratio = value / old_value if higher_better else old_value / value
            verdict = "same" if abs(ratio - 1) <= NOISE else ("better" if ratio > 1 else "WORSE")
            rows.append((r["name"], measure, old_text, text, f"x{ratio:.2f}", verdict))
    return rows


def print_compare(old, new, old_path):
    rows = compare(old, new)
    print(f"\nCompared with {old_path} ({old['context'].get('date', '?')}, {old.get('mode', '?')} set):")
    print("  ratio > 1 is better (faster, or lower latency); within ±10 % counts as the same")
    if not rows:
        print("  no workload in common")
        return rows
    header = ("workload", "measure", "earlier", "now", "ratio", "")
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        cells = [f"{c:<{w}}" if i in (0, 1, 5) else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths))]
        print("  " + "  ".join(cells).rstrip())
    if old["context"].get("cpu") != new["context"].get("cpu"):
        print(f"  note: different CPU ({old['context'].get('cpu')} then, {new['context'].get('cpu')} now)")
    worse = sum(1 for r in rows if r[5] == "WORSE")
    better = sum(1 for r in rows if r[5] == "better")
    print(f"  {better} better, {worse} worse, {len(rows) - better - worse} the same")
    return rows


# --- report --------------------------------------------------------------------------------------

def markdown_table(data):
    def ratio(r, key):
        value = r.get(key)
        return f"{value:.2f}x" if isinstance(value, (int, float)) else "-"

    lines = ["| workload | rate | time/run | p50 | p99 | peak mem | ÷ ZeroMQ | ÷ mutex queue | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in data["results"]:
        lines.append(f"| `{r['name']}` | {rate_text(r)} | {duration(r['time_s'])} | {latency(r['p50_ns'])} | "
                     f"{latency(r['p99_ns'])} | {memory(r['peak_bytes'])} | {ratio(r, 'ratio_zeromq')} | "
                     f"{ratio(r, 'ratio_mutex')} | {note(r)} |")
    return "\n".join(lines)


def markdown_targets(data):
    if not data.get("targets"):
        return ""
    lines = ["| target | measured | goal | reference | |", "|---|---:|---|---|---|"]
    for t in data["targets"]:
        lines.append(f"| {t['what']} | {t['measured_text']} | {t['target']} | {t['reference']} | "
                     f"{'met' if t['met'] else '**missed**'} |")
    return "\n".join(lines)


def write_markdown(path, data, compare_rows=None, compare_path=None, compare_date=None):
    ctx = data["context"]
    parts = [f"# kincir-bench, {ctx.get('date', '?')}", "",
             f"{data.get('mode', '?')} set, medians of {data.get('repetitions', '?')} runs"
             + (f", filter `{data['filter']}`" if data.get("filter") else "") + ".", "",
             f"Machine: {machine_line(ctx)}.", "", markdown_table(data), "",
             "time/run = the timed part of one run; peak mem = heap growth during it, beyond the input messages.", ""]
    targets = markdown_targets(data)
    if targets:
        parts += [targets, ""]
    if compare_rows:
        parts += [f"## Compared with `{os.path.basename(compare_path)}` ({compare_date})", "",
                  "| workload | measure | earlier | now | ratio (> 1 better) | |", "|---|---|---:|---:|---:|---|"]
        parts += [f"| `{a}` | {b} | {c} | {d} | {e} | {f} |" for a, b, c, d, e, f in compare_rows]
        parts.append("")
    parts += ["![throughput](throughput.svg)", ""]
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(parts))


def gnuplot_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_chart(directory, data):
    """throughput.svg: rate per workload (log scale), then rate and payload bandwidth by size."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        print("kincir-bench report: gnuplot is not installed, so throughput.svg was not drawn "
              "(Debian: apt-get install gnuplot-nox; scripts/dev bench --report installs it). "
              "The Markdown and JSON were written.", file=sys.stderr)
        return False
    rows = [r for r in data["results"] if not r["failed"] and r["unit"] and r["rate"]]
    sizes = sorted((r for r in rows if r["group"] == "size"), key=lambda r: r["message_size"])
    bars = os.path.join(directory, "throughput.dat")
    with open(bars, "w", encoding="utf-8") as out:
        for i, r in enumerate(rows):
            kind = 0 if r["unit"] == "msg/s" else 1
            out.write(f"{i} {r['rate'] / 1e6:.6g} {kind} {gnuplot_quote(r['name'])}\n")
    by_size = os.path.join(directory, "sizes.dat")
    with open(by_size, "w", encoding="utf-8") as out:
        for r in sizes:
            bandwidth = (r.get("payload_bytes_per_s") or 0) / 1e6
            out.write(f"{r['message_size']} {r['rate'] / 1e6:.6g} {bandwidth:.6g}\n")
    ctx = data["context"]
    title = f"kincir-bench {ctx.get('date', '')[:10]}: {ctx.get('cpu', '')}, {ctx.get('logical_cpus', '?')} CPUs"
    height = 480 + (360 if sizes else 0)
    script = f"""
set terminal svg size 1000,{height} dynamic enhanced font "sans,11" background "white"
set output {gnuplot_quote(os.path.join(directory, 'throughput.svg'))}
set multiplot layout {2 if sizes else 1},1 title {gnuplot_quote(title)}
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set logscale y
set ylabel "million per second (median)"
set xtics rotate by -40 left noenhanced font ",9"
set xrange [-0.6:{len(rows) - 0.4}]
set key top right
plot {gnuplot_quote(bars)} using 1:2:($3 == 0 ? 0x3a78b5 : 0xd9822b):xtic(4) with boxes lc rgb variable notitle, \\
     NaN with boxes lc rgb "#3a78b5" title "messages/s", \\
     NaN with boxes lc rgb "#d9822b" title "deliveries/s (messages x subscribers)"
"""
    if sizes:
        script += f"""
unset xrange
set logscale x 2
set xtics norotate enhanced font ",10"
set xlabel "payload size (bytes): publisher builds each message, one subscriber reads it"
set ylabel "million messages/s"
set y2label "payload MB/s"
set logscale y2
set y2tics
set key top center
plot {gnuplot_quote(by_size)} using 1:2 with linespoints lw 2 pt 7 lc rgb "#3a78b5" title "messages/s", \\
     {gnuplot_quote(by_size)} using 1:3 axes x1y2 with linespoints lw 2 pt 5 lc rgb "#2a9d5c" title "payload MB/s"
"""
    script += "unset multiplot\n"
    script_path = os.path.join(directory, "throughput.gp")
    with open(script_path, "w", encoding="utf-8") as out:
        out.write(script)
    done = subprocess.run([gnuplot, script_path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"kincir-bench report: gnuplot failed:\n{done.stderr}", file=sys.stderr)
        return False
    return True


# --- driver --------------------------------------------------------------------------------------

def load(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != "kincir-bench/1":
        sys.exit(f"kincir-bench: {path} is not a kincir-bench JSON file")
    return data


def git_describe():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    compare_path = report_dir = json_path = from_path = None
    passthrough = []
    binary = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--compare", "--report", "--json", "--from"):
            if i + 1 >= len(argv):
                print(f"kincir-bench: {arg} needs a value", file=sys.stderr)
                return 2
            value = argv[i + 1]
            if arg == "--compare":
                compare_path = value
            elif arg == "--report":
                report_dir = value
            elif arg == "--from":
                from_path = value
            else:
                json_path = value
            i += 2
            continue
        if binary is None and from_path is None and not arg.startswith("-"):
            binary = arg
        else:
            passthrough.append(arg)
        i += 1

    if compare_path and not os.path.isfile(compare_path):
        print(f"kincir-bench: --compare {compare_path}: no such file", file=sys.stderr)
        return 2
    if from_path:
        data = load(from_path)
        status = 0
    else:
        if binary is None:
            print("kincir-bench: no binary given", file=sys.stderr)
            return 2
        temporary = None
        if json_path is None and (compare_path or report_dir) and "--list" not in passthrough \
                and "--help" not in passthrough:
            temporary = tempfile.NamedTemporaryFile(prefix="kincir-bench-", suffix=".json", delete=False)
            temporary.close()
            json_path = temporary.name
        command = [binary] + passthrough + (["--json", json_path] if json_path else [])
        status = subprocess.run(command, check=False).returncode
        if json_path is None or not os.path.isfile(json_path) or os.path.getsize(json_path) == 0:
            return status
        data = load(json_path)
        described = git_describe()
        if described:
            data["context"]["git"] = described
            with open(json_path, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
                out.write("\n")
        if temporary is not None:
            os.unlink(json_path)

    compare_rows = None
    compare_date = None
    if compare_path:
        earlier = load(compare_path)
        compare_date = earlier["context"].get("date", "?")
        compare_rows = print_compare(earlier, data, compare_path)
    if report_dir:
        os.makedirs(report_dir, exist_ok=True)
        with open(os.path.join(report_dir, "results.json"), "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
            out.write("\n")
        write_markdown(os.path.join(report_dir, "results.md"), data, compare_rows, compare_path, compare_date)
        drawn = write_chart(report_dir, data)
        print(f"\nreport: {os.path.join(report_dir, 'results.md')}"
              + (f", {os.path.join(report_dir, 'throughput.svg')}" if drawn else " (no chart: see above)"))
        if not drawn and status == 0:
            status = 3
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
