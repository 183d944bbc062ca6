"""`fastnn bench`: fastnn native, fastnn's NumPy reference and PyTorch side by side.

The workloads and implementations are in fastnn.benchmarks (shared with the
bench/ pytest-benchmark suite); this module parses options, runs the table in
one process (warm-up, then medians of several samples, threads fixed), prints it
and optionally writes JSON and a bar chart.
"""
import argparse
import datetime
import json
import math
import sys
import time

import fastnn
from fastnn import _plot
from fastnn._config import MAX_THREADS
from fastnn import benchmarks as B

DEFAULTS = {"repeat": 10, "warmup": 2, "min_sample_ms": 5.0, "max_seconds": 5.0, "rounds": 3}
QUICK = {"repeat": 3, "warmup": 1, "min_sample_ms": 2.0, "max_seconds": 1.5, "rounds": 1}


def _positive_int(name, most=None):
    expects = f"{name} expects a whole number >= 1" + (f" and <= {most}" if most else "")

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expects}, got {text!r}") from None
        if value < 1 or most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{expects}, got {value}")
        return value
    return parse


def _positive_float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} expects a number > 0, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{name} expects a number > 0, got {text!r}")
        return value
    return parse


def _thread_counts(text):
    """--threads: one count, or several ("1,2,4,8,16") for a scaling run."""
    parse = _positive_int("--threads", most=MAX_THREADS)
    counts = sorted({parse(t.strip()) for t in text.split(",") if t.strip()})
    if not counts:
        raise argparse.ArgumentTypeError(f"--threads expects N or a comma-separated list such as 1,2,4, got {text!r}")
    return counts


def _workloads(text):
    if not any(token.strip() for token in text.split(",")):  # an empty shell variable, say: leaving --only out selects all
        raise argparse.ArgumentTypeError(f"--only: expected a comma-separated list of workloads, got {text!r}; "
                                         f"choose from: {', '.join(B.selection_tokens())}")
    try:
        return B.select_workloads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--only: {exc}") from None


def _implementations(text):
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in B.IMPLEMENTATIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--impl: unknown implementation(s) {', '.join(map(repr, bad)) or repr(text)}; "
            f"choose from: {', '.join(B.IMPLEMENTATIONS)}")
    return [n for n in B.IMPLEMENTATIONS if n in names]


def add_arguments(parser):
    parser.description = (
        "Time the workloads of docs/BENCHMARKS.md (forward + backward, float32) on fastnn's native "
        "kernels, fastnn's NumPy reference backend and PyTorch CPU (when installed), in one process: "
        "warm-up, then the median of several samples, with the same thread count for all.")
    parser.add_argument("--threads", type=_thread_counts, default=[1], metavar="N",
                        help="threads for fastnn, NumPy's BLAS (via threadpoolctl) and torch (default: 1); "
                             "a comma-separated list (1,2,4,8,16) runs the table at each count, then times "
                             "fastnn native at the counts in turns, and adds the speed-up of each over 1 thread "
                             "(or the smallest count)")
    parser.add_argument("--only", type=_workloads, default=None, metavar="LIST",
                        help="comma-separated workloads: letters ("
                             + ", ".join(sorted({w.letter for w in B.WORKLOADS})) + "), keys (G2), names (relu) "
                             "or tags (" + ", ".join(sorted({t for w in B.WORKLOADS for t in w.tags})) + ")")
    parser.add_argument("--impl", type=_implementations, default=list(B.IMPLEMENTATIONS), metavar="LIST",
                        help="comma-separated implementations among native, numpy, torch (default: all available)")
    parser.add_argument("--repeat", type=_positive_int("--repeat"), default=None, metavar="N",
                        help=f"timed samples per cell (default {DEFAULTS['repeat']}, {QUICK['repeat']} with --quick)")
    parser.add_argument("--warmup", type=_positive_int("--warmup"), default=None, metavar="N",
                        help=f"untimed calls before timing (default {DEFAULTS['warmup']}, "
                             f"{QUICK['warmup']} with --quick), after the checked first call")
    parser.add_argument("--rounds", type=_positive_int("--rounds"), default=None, metavar="N",
                        help=f"the implementations take turns N times, each timing repeat/N samples a turn, "
                             f"so a slow spell of a shared machine does not fall on one of them "
                             f"(default {DEFAULTS['rounds']}, {QUICK['rounds']} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI smoke run: fewer samples and J on {B.J_IMAGES_QUICK} images instead of "
                             f"{B.J_IMAGES}")
    parser.add_argument("--clock", choices=B.CLOCKS, default="wall",
                        help="time per call by the wall clock (default) or by this process's CPU time; 'cpu' "
                             "(with --threads 1 only) estimates idle-machine times on a machine shared with "
                             "other work")
    parser.add_argument("--peak-gflops", type=_positive_float("--peak-gflops"), default=None, metavar="X",
                        help="fp32 FMA peak of the cores used, GFLOP/s (default: measured by running independent FMA "
                             "chains on fastnn's SIMD path on that many cores at once; on the portable path, "
                             "the CPU flags times /proc/cpuinfo's clock); "
                             "with several thread counts, that of the smallest, scaled by the thread count")
    parser.add_argument("--json", dest="json_path", default=None, metavar="FILE",
                        help="write all timings and the machine description as JSON")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="write the table as Markdown, with the date, command and machine")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="write a bar chart of speed-ups over NumPy, or with several thread counts the "
                             "speed-up over the smallest count per workload (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# ----------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr (one line per step when stderr is not a terminal)."""

    def __init__(self, total, stream=None, enabled=True):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def step(self, label):
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:6.1f}s  {label}"
        if self.tty:
            self.stream.write("\r" + line[:110].ljust(110))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def close(self):
        if self.tty:
            elapsed = time.perf_counter() - self.start
            self.stream.write("\r" + f"done: {self.total} cells in {elapsed:.1f}s".ljust(110) + "\n")
            self.stream.flush()


def _fail(message):
    print(f"fastnn bench: error: {message}", file=sys.stderr)
    return 2


def _command_line(args, threads=None):
    """The command that reproduces the run (with `threads`, the run at that one count of a sweep)."""
    parts = ["fastnn", "bench", "--threads", str(threads) if threads else ",".join(map(str, args.threads))]
    if args.only is not None:
        parts += ["--only", ",".join(w.key for w in args.only)]
    if args.impl != list(B.IMPLEMENTATIONS):
        parts += ["--impl", ",".join(args.impl)]
    if args.repeat is not None:
        parts += ["--repeat", str(args.repeat)]
    if args.rounds is not None:
        parts += ["--rounds", str(args.rounds)]
    if args.warmup is not None:
        parts += ["--warmup", str(args.warmup)]
    if args.quick:
        parts.append("--quick")
    if args.clock != "wall":
        parts += ["--clock", args.clock]
    if args.peak_gflops:
        parts += ["--peak-gflops", f"{args.peak_gflops:g}"]
    return " ".join(parts)


def check_cell(workload, impl, data, reference):
    """Build one implementation's callable and check its first results against the reference.
    Returns (the JSON dict so far, its results, the callable, the first call's seconds)."""
    cell = {}
    with B.implementation_context(impl):
        fn = B.prepare(workload, impl, data)
        t0 = time.perf_counter()
        outputs = fn()
        first = time.perf_counter() - t0
        got = B.snapshot(outputs)
    if reference is None:
        cell["check"] = "reference"
    else:
        ok, err = B.compare_outputs(reference, got)
        cell["check"] = "ok" if ok else "mismatch"
        cell["max_rel_err"] = err if math.isfinite(err) else None
    wrong = B.wrong_dtypes(outputs)
    if wrong:
        cell["check"], cell["wrong_dtypes"] = "mismatch", wrong
    return cell, got, fn, first


def _round_sizes(repeat, rounds):
    """repeat samples split over at most `rounds` rounds, none empty."""
    rounds = max(1, min(rounds, repeat))
    return [repeat // rounds + (1 if r < repeat % rounds else 0) for r in range(rounds)]


def time_cells(fns, firsts, settings, progress, label):
    """Timing of each implementation's callable, in rounds: every round times each
    implementation in turn, so a slow spell of a shared machine falls on all of them
    rather than on whichever was being timed, and the ratios stay fair."""
    timings = {impl: [] for impl in fns}
    for r, size in enumerate(_round_sizes(settings["repeat"], settings["rounds"])):
        for impl, fn in fns.items():
            progress.step(f"{label} / {impl}")
            B.let_idle_threads_settle(settings["threads"])
            with B.implementation_context(impl):
                timings[impl].append(B.time_callable(
                    fn, size, warmup=settings["warmup"] if r == 0 else 1,
                    min_sample_s=settings["min_sample_ms"] / 1e3,
                    max_seconds=settings["max_seconds"] * size / settings["repeat"],
                    first_call_s=firsts[impl] if r == 0 else None,
                    # after the pause, the second core of a VM answers slowly for a while
                    # (2-thread SimpleConvNet steps took 8.4 ms instead of 5 right after it)
                    min_warmup_s=0.2 if settings["threads"] > 1 else 0.0))
    return {impl: B.Timing.merge(parts) for impl, parts in timings.items()}


# Warm-up of each several-thread turn: a vCPU left idle during the 1-thread turn answers slowly
# for a while (on this project's 2-vCPU guest, DeepConvNet inference in turns after 0.2 s of
# warm-up took 80-91 ms on 2 threads, after 1 s 66-67 ms, against 129-143 ms on 1 thread).
TURNS_WARMUP_S = 1.0


def time_counts_in_turns(fn, counts, settings, progress, label):
    """Timing of fastnn native's callable at each thread count, the counts taking turns in rounds
    as time_cells's implementations do. A sweep's tables are minutes apart, and a slow spell of a
    shared machine during one of them would make up most of a speed-up read off them (2-thread
    rows of this 2-vCPU machine vary by 20-80%); timed in turns, both sides of the ratio share
    the spells."""
    timings = {n: [] for n in counts}
    B.let_idle_threads_settle(max(counts))   # the tables' NumPy and torch threads
    for r, size in enumerate(_round_sizes(settings["repeat"], settings["rounds"])):
        for n in counts:
            progress.step(f"{label} / {n} thread{'s' if n > 1 else ''}")
            with B.thread_limits(n), B.implementation_context("native"):
                timings[n].append(B.time_callable(
                    fn, size, warmup=settings["warmup"] if r == 0 else 1,
                    min_sample_s=settings["min_sample_ms"] / 1e3,
                    max_seconds=settings["max_seconds"] * size / settings["repeat"],
                    min_warmup_s=TURNS_WARMUP_S if n > 1 else 0.0))
    return {n: B.Timing.merge(parts) for n, parts in timings.items()}


def scaling_in_turns(workloads, counts, settings, progress):
    """fastnn native's scaling rows of a sweep, {key, title, kind, impl, method: "turns",
    median_ms, spread, speedup: {threads: x over the smallest count}}, each workload timed at
    every count in turns (its results were checked in the tables). A workload whose timing
    fails is left out with a line saying why, as a failed cell is in a table."""
    rows = []
    for workload in workloads:
        data = workload.make_data(quick=settings["quick"])
        try:
            with B.implementation_context("native"):
                fn = B.prepare(workload, "native", data)
            timings = time_counts_in_turns(fn, counts, settings, progress, f"{workload.key} {workload.name}")
        except Exception as exc:  # noqa: BLE001 - one broken workload must not lose the sweep's report
            print(f"{workload.key}: native not timed in turns ({type(exc).__name__}: {exc})", flush=True)
            continue
        stats = {n: B.summarize(t.samples(settings["clock"])) for n, t in timings.items()}
        ms = {n: st["median_ms"] for n, st in stats.items()}
        rows.append({"key": workload.key, "title": B.workload_title(workload, data), "kind": workload.kind,
                     "impl": "native", "method": "turns", "median_ms": ms,
                     "spread": {n: st["spread"] for n, st in stats.items()},
                     "speedup": {n: ms[counts[0]] / v for n, v in ms.items() if v}})
    return rows


def run_benchmarks(workloads, impls, settings, machine, progress):
    """The results list of the JSON output (see docs/BENCHMARKS.md)."""
    results = []
    clock = settings["clock"]
    for workload in workloads:
        data = workload.make_data(quick=settings["quick"])
        row = {"key": workload.key, "name": workload.name, "title": B.workload_title(workload, data),
               "kind": workload.kind,
               "flops": workload.flops(data) if workload.flops else None,
               "bytes": workload.traffic_bytes(data) if workload.traffic_bytes else None,
               "timings": {}}
        # a memory-bound row's yardstick: a copy of as many bytes, in whatever cache level they
        # fit (the machine's 128 MiB copy measures main memory, where F's data never goes)
        copy_gbps = machine.get("copy_gbps")
        if row["bytes"] and copy_gbps:  # measured with the machine (not in a dry run)
            copy_gbps = row["copy_gbps"] = B.measure_copy_gbps(B.copy_bytes_like(row["bytes"]), clock=clock)
        reference = None
        cells, fns, firsts = {}, {}, {}
        for impl in impls:
            try:
                cells[impl], got, fns[impl], firsts[impl] = check_cell(workload, impl, data, reference)
            except Exception as exc:  # noqa: BLE001 - one broken cell must not hide the rest of the table
                row["timings"][impl] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            if reference is None:
                reference = got
        label = f"{workload.key} {workload.name}"
        try:
            timings = time_cells(fns, firsts, settings, progress, label)
        except Exception as exc:  # noqa: BLE001
            timings = {}
            for impl in fns:
                row["timings"][impl] = {"error": f"{type(exc).__name__}: {exc}"}
        for impl, timing in timings.items():
            cell = cells[impl]
            cell.update(B.summarize(timing.samples(clock)))
            cell.update({"samples_ms": timing.samples(clock), "calls_per_sample": timing.number,
                         "wall_median_ms": B.summarize(timing.wall_ms)["median_ms"],
                         "cpu_median_ms": B.summarize(timing.cpu_ms)["median_ms"], "cpu_util": timing.cpu_util})
            cell.update(B.derived_metrics(workload, data, cell["median_ms"], machine.get("peak_gflops"),
                                          copy_gbps))
            row["timings"][impl] = cell
        row["timings"] = {impl: row["timings"][impl] for impl in impls if impl in row["timings"]}
        base = row["timings"].get("numpy", {}).get("median_ms")
        row["speedup_vs_numpy"] = {impl: base / cell["median_ms"]
                                   for impl, cell in row["timings"].items()
                                   if impl != "numpy" and base and "median_ms" in cell}
        native, torch = (row["timings"].get(k, {}).get("median_ms") for k in ("native", "torch"))
        row["native_vs_torch"] = torch / native if native and torch else None
        results.append(row)
    return results


# ----------------------------------------------------------------------------
# Output

def _ms(value):
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _x(value):
    return "-" if value is None else f"{value:.2f}x"


def _num(value, fmt):
    return "-" if value is None else format(value, fmt)


def format_machine(machine, settings):
    lines = [f"fastnn {machine['fastnn']} bench  ({machine['date']})",
             f"  CPU      : {machine['cpu']} ({machine['usable_cores']} usable cores; "
             f"{', '.join(machine['isa_flags']) or 'no AVX2/AVX-512'})"]
    if machine["native_available"]:
        lines.append(f"  fastnn   : native kernels, SIMD path {machine['simd']}, "
                     f"OpenMP {'yes' if machine['openmp'] else 'no'}")
    else:
        lines.append(f"  fastnn   : native kernels NOT available ({machine['native_error']}); "
                     "only the NumPy reference backend is timed")
    applied = machine["threads_applied"] or {}
    blas = machine.get("blas")
    if blas is None:
        blas_text = "unknown (pip install threadpoolctl to see and limit it)"
    else:
        blas_text = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                              f"{b['threading_layer']}) {b['num_threads']} thread(s)" for b in blas) or "none found"
    lines += [
        f"  threads  : {settings['threads']} for fastnn; NumPy BLAS {applied.get('blas')}; "
        f"torch {applied.get('torch') if applied.get('torch') is not None else '(not used)'}",
        f"  NumPy    : {machine['numpy']}, BLAS: {blas_text}",
    ]
    if machine.get("torch"):
        lines.append(f"  PyTorch  : {machine['torch']}")
    peak = machine["peak_gflops"]
    lines.append(f"  FMA peak : {_num(peak, '.1f')} GFLOP/s fp32 = {machine['peak_basis']}")
    if "sgemm_gflops" in machine:
        lines.append(f"  measured : NumPy sgemm 1024^3 {machine['sgemm_gflops']:.1f} GFLOP/s; "
                     f"1-thread copy {machine['copy_gbps']:.1f} GB/s (read + write)")
        if peak and machine["sgemm_gflops"] > peak:
            lines.append("             (the sgemm beats this peak: the running clock is above the one assumed; "
                         "give the real peak with --peak-gflops)")
    load = machine.get("load_average")
    if load is not None:
        busy = load > 0.5
        lines.append(f"  load     : {load:.2f} (1-minute load average at start on {machine['usable_cores']} cores)"
                     + ("; other processes are running: expect inflated, noisy timings" if busy else ""))
    rounds = len(_round_sizes(settings["repeat"], settings.get("rounds", 1)))
    lines.append(f"  timing   : median of {settings['repeat']} samples after {settings['warmup']} warm-up "
                 f"call(s) and one checked call; a sample lasts >= {settings['min_sample_ms']:g} ms"
                 + (f"; the implementations take turns in {rounds} rounds" if rounds > 1 else "")
                 + (" (quick)" if settings["quick"] else "")
                 + ("; times are process CPU time (--clock cpu)" if settings["clock"] == "cpu" else ""))
    return "\n".join(lines)


def table_rows(results, impls, primary, clock="wall"):
    """(headers, rows, notes) of the table: ms per implementation, speed-ups, the primary implementation's rates."""
    has = {impl: any("median_ms" in r["timings"].get(impl, {}) for r in results) for impl in impls}
    failed = {impl: any("error" in r["timings"].get(impl, {}) for r in results) for impl in impls}
    cols = [i for i in B.IMPLEMENTATIONS if has.get(i) or failed.get(i)]   # one that failed every row: its errors
    speed_cols = [i for i in cols if i != "numpy" and has.get("numpy")]
    show_vs_torch = has.get("native") and has.get("torch")
    unit = "cpu ms" if clock == "cpu" else "ms"
    headers = ["workload"] + [f"{i} {unit}" for i in cols] + [f"{i}/np" for i in speed_cols]
    if show_vs_torch:
        headers.append("vs torch")
    headers += ["GFLOP/s", "%peak", "GB/s", "%copy", "spread", "cpu"]
    rows, problems = [], []
    for r in results:
        t = r["timings"]
        cells = [f"{r['key']:<3}{r['title']}"]
        for i in cols:
            c = t.get(i, {})
            text = _ms(c.get("median_ms")) if "median_ms" in c else ("error" if "error" in c else "-")
            if c.get("check") == "mismatch":
                text = "!" + text
            cells.append(text)
            if "error" in c:
                problems.append(f"{r['key']} {i}: {c['error']}")
            if c.get("check") == "mismatch" and c.get("wrong_dtypes"):
                problems.append(f"{r['key']} {i}: results in {', '.join(c['wrong_dtypes'])}, not float32")
            elif c.get("check") == "mismatch":
                problems.append(f"{r['key']} {i}: results differ from the reference "
                                f"(max error {_num(c.get('max_rel_err'), '.2g')} of scale)")
        cells += [_x(r["speedup_vs_numpy"].get(i)) for i in speed_cols]
        if show_vs_torch:
            cells.append(_x(r["native_vs_torch"]))
        p = t.get(primary, {})
        spreads = [c["spread"] for c in t.values() if "spread" in c]
        shares = [c["cpu_util"] for c in t.values() if c.get("cpu_util") is not None]
        cells += [_num(p.get("gflops"), ".1f"), _num(p.get("peak_pct"), ".0f"), _num(p.get("gbps"), ".1f"),
                  _num(p.get("copy_pct"), ".0f"), f"{100 * max(spreads):.0f}%" if spreads else "-",
                  f"{min(shares):.2f}" if shares else "-"]
        rows.append(cells)
    notes = ["ms: median per call (forward + backward; I: one SGD step; J: inference)"
             + (", measured as this process's CPU time (--clock cpu)." if clock == "cpu" else ".")]
    if speed_cols:
        notes.append("x/np: speed-up over fastnn's NumPy reference backend (NumPy ms / that ms).")
    if show_vs_torch:
        notes.append("vs torch: PyTorch ms / fastnn native ms (above 1: fastnn is faster).")
    notes.append(f"GFLOP/s, %peak (of the FMA peak), GB/s (compulsory traffic) and %copy (of the "
                 f"bandwidth of a 1-thread copy moving as many bytes as the row) are those of "
                 f"'{primary}'. GFLOP/s counts the direct algorithm's flops: Winograd convolutions (3x3, "
                 f"stride 1) do fewer, so they can show more than 100% of the peak.")
    notes.append("spread: the largest interquartile range / median in the row (timing noise); cpu: the smallest "
                 "share of CPU this process got while timing the row (CPU time / wall time; about 1 or more on an "
                 "idle machine, lower when other processes compete).")
    utils = [(f"{r['key']} {i}", c["cpu_util"]) for r in results for i, c in r["timings"].items()
             if c.get("cpu_util") is not None]
    contended = [(name, u) for name, u in utils if u < 0.8]
    if len(contended) > 8:
        shares = sorted(u for _, u in contended)
        notes.append(f"CONTENDED: in {len(contended)} of {len(utils)} cells this process got less than 0.8 of a "
                     f"core while timing (median CPU time / wall time {shares[len(shares) // 2]:.2f}): other "
                     "processes were running; "
                     + ("CPU time discounts the waiting but not the shared caches and memory bandwidth."
                        if clock == "cpu" else "re-measure on an idle machine or with --clock cpu."))
    elif contended:
        notes.append("contended (this process got less than 0.8 of a core while timing; CPU time / wall time): "
                     + ", ".join(f"{name} ({u:.2f})" for name, u in contended))
    notes += [f"PROBLEM {p}" for p in problems]
    return headers, rows, notes


def format_table(results, impls, primary, clock="wall"):
    """The text table printed by `fastnn bench`."""
    headers, rows, notes = table_rows(results, impls, primary, clock)
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(headers)]
    widths[0] = max(widths[0], 44)

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if k == 0 else c.rjust(widths[k]) for k, c in enumerate(cells))
    out = [line(headers)]
    out.append("-" * len(out[0]))
    out += [line(r) for r in rows]
    return "\n".join(out + [""] + notes)


def format_targets(targets):
    """The issue-6 and issue-4 targets met and missed (with the gap), one line each."""
    if not targets:
        return ""
    what = {"numpy": "speed-up over NumPy", "torch": "vs PyTorch", "copy": "% of copy bandwidth",
            "peak": "% of FMA peak"}
    lines = [f"targets (fastnn native): {sum(t['met'] for t in targets)} of {len(targets)} met"]
    for t in sorted(targets, key=lambda t: (t["met"], t["workload"])):
        unit = "%" if t["against"] in ("copy", "peak") else "x"
        status = "met" if t["met"] else f"MISSED by {t['target'] / t['measured']:.2f}x" if t["measured"] > 0 \
            else "MISSED"
        lines.append(f"  {t['workload']:<3}{what[t['against']]:<22} {t['measured']:8.2f}{unit}  "
                     f"(target {t['target']:g}{unit})  {status}")
    return "\n".join(lines)


def format_markdown(report):
    """The table as Markdown with what it was measured on, for docs/BENCHMARKS.md or a README."""
    m, st = report["machine"], report["settings"]
    headers, rows, notes = table_rows(report["results"], st["implementations"], report["primary"], st["clock"])
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in m.get("blas") or [])
    native = (f"native kernels, SIMD {m['simd']}" if m["native_available"]
              else "native kernels not built (NumPy reference only)")
    load = m.get("load_average")
    lines = [
        f"Measured {report['date']} with `{report['command']}`: {st['threads']} thread(s) for fastnn, "
        f"NumPy's BLAS and torch; {m['cpu']} ({m['usable_cores']} usable cores, "
        f"{', '.join(m['isa_flags'])}); fastnn {m['fastnn']}, {native}; NumPy {m['numpy']}"
        + (f" with {blas}" if blas else "") + (f"; PyTorch {m['torch']}" if m.get("torch") else "")
        + f". FMA peak {_num(m['peak_gflops'], '.1f')} GFLOP/s ({m['peak_basis']}); measured NumPy sgemm "
        f"{_num(m.get('sgemm_gflops'), '.1f')} GFLOP/s, copy {_num(m.get('copy_gbps'), '.1f')} GB/s"
        + (f"; load average {load:.2f} at start" if load is not None else "") + ".",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [""] + [f"- {n}" for n in notes]
    if report.get("targets"):
        lines += ["", "```", format_targets(report["targets"]), "```"]
    return "\n".join(lines) + "\n"


def scaling_rows(runs, impls, turns=()):
    """[{key, title, kind, impl, method, median_ms: {threads: ms}, speedup: {threads: x}}] of a run at
    several thread counts ({threads: results}), the speed-up over the smallest count: fastnn
    native's from `turns` (scaling_in_turns) where given, the others' from the tables
    (method "tables")."""
    counts = sorted(runs)
    first = {r["key"]: r for r in runs[counts[0]]}
    timed_in_turns = {r["key"]: r for r in turns}
    out = []
    for key, row in first.items():
        for impl in impls:
            if impl == "native" and key in timed_in_turns:
                out.append(timed_in_turns[key])
                continue
            ms = {n: next((r["timings"].get(impl, {}).get("median_ms") for r in runs[n] if r["key"] == key), None)
                  for n in counts}
            if ms[counts[0]] is None:
                continue
            out.append({"key": key, "title": row["title"], "kind": row["kind"], "impl": impl, "method": "tables",
                        "median_ms": ms, "speedup": {n: ms[counts[0]] / v for n, v in ms.items() if v}})
    return out


def format_scaling(rows, counts):
    """The text table of a run at several thread counts: ms and speed-up over the smallest count."""
    headers = ["workload", "impl"] + [f"{n} thread{'s' if n > 1 else ''}" for n in counts]
    body = []
    for r in rows:
        cells = [f"{r['key']:<3}{r['title']}", r["impl"]]
        for n in counts:
            ms = r["median_ms"].get(n)
            cells.append("-" if ms is None else _ms(ms) if n == counts[0]
                         else f"{_ms(ms)} ({_x(r['speedup'].get(n))})")
        body.append(cells)
    widths = [max(len(h), *(len(b[k]) for b in body)) if body else len(h) for k, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(widths[k]) if k < 2 else c.rjust(widths[k]) for k, c in enumerate(cells))
    out = [f"scaling: median ms at each thread count (speed-up over {counts[0]} "
           f"thread{'s' if counts[0] > 1 else ''})", line(headers), "-" * len(line(headers))]
    notes = []
    if any(r.get("method") == "turns" for r in rows):
        notes.append("native: timed again after the tables, the thread counts taking turns in each round "
                     "(the scaling targets use these)")
    if any(r.get("method", "tables") == "tables" for r in rows):
        notes.append("the other rows: the medians of the tables, minutes apart")
    return "\n".join(out + [line(b) for b in body] + ([""] + notes if notes else []))


def format_scaling_targets(targets):
    """Issue 4's thread-scaling targets met and missed, one line each."""
    if not targets:
        return ""
    lines = [f"scaling targets (fastnn native, speed-up over 1 thread): "
             f"{sum(t['met'] for t in targets)} of {len(targets)} met"]
    for t in sorted(targets, key=lambda t: (t["met"], t["threads"], t["workload"])):
        status = "met" if t["met"] else f"MISSED by {t['target'] / t['measured']:.2f}x"
        lines.append(f"  {t['workload']:<3}{t['threads']:>3} threads {t['measured']:8.2f}x  "
                     f"(target {t['target']:g}x)  {status}")
    return "\n".join(lines)


def scaling_figure(rows, counts, impl, note):
    """Speed-up over the smallest thread count, one line per workload of `impl` (log-log)."""
    import matplotlib.ticker

    fig = _plot.figure(7, 5)
    ax = fig.subplots()
    mine = [r for r in rows if r["impl"] == impl]
    for k, r in enumerate(mine):
        xs = [n for n in counts if n in r["speedup"]]
        ax.plot(xs, [r["speedup"][n] for n in xs], marker="o", color=f"C{k % 10}",
                linestyle="-" if k < 10 else "--", label=f"{r['key']} {r['title']}")
    ax.plot(counts, [n / counts[0] for n in counts], color="black", linewidth=0.8, linestyle=":",
            label="linear")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(counts)
    ax.set_xticklabels([str(n) for n in counts])
    top = max([n / counts[0] for n in counts] + [x for r in mine for x in r["speedup"].values()])
    ticks = [2.0 ** e for e in range(-3, 8) if 2.0 ** e <= 2 * top]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}x" for t in ticks])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("threads")
    ax.set_ylabel(f"speed-up over {counts[0]} thread{'s' if counts[0] > 1 else ''}")
    ax.set_title(f"fastnn bench, {B.IMPLEMENTATION_LABELS[impl]} {note}")
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return fig


def write_scaling_plot(path, rows, counts, impl, note):
    _plot.save(scaling_figure(rows, counts, impl, note), path)


def speedup_figure(results, impls, primary_note):
    """Horizontal bars of each implementation's speed-up over the NumPy reference, per
    workload, on a log scale around 1x (left of it: slower than NumPy)."""
    import matplotlib.ticker

    series = [i for i in impls if i != "numpy" and any(i in r["speedup_vs_numpy"] for r in results)]
    labels = [f"{r['key']} {r['name']}" for r in results]
    fig = _plot.figure(8, 0.45 * len(results) + 1.8)
    ax = fig.subplots()
    height = 0.8 / max(len(series), 1)
    values = []
    for k, impl in enumerate(series):
        labelled = False
        for j, r in enumerate(results):
            x = r["speedup_vs_numpy"].get(impl)
            if x is None:
                continue
            y = j + (k - (len(series) - 1) / 2) * height
            # Bars grow from 1 (as fast as NumPy), left for slower, right for faster.
            ax.barh(y, x - 1.0, left=1.0, height=height, color=f"C{k}",
                    label=None if labelled else B.IMPLEMENTATION_LABELS[impl])
            labelled = True
            ax.annotate(f"{x:.2f}x", (x, y), xytext=(3 if x >= 1 else -3, 0), textcoords="offset points",
                        ha="left" if x >= 1 else "right", va="center", fontsize=8)
            values.append(x)
    ax.axvline(1.0, color="black", linewidth=0.8)
    if values:
        ax.set_xlim(min(min(values), 1.0) / 2, max(max(values), 1.0) * 2)
    ax.set_yticks(range(len(results)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("speed-up over fastnn's NumPy reference backend (log scale)")
    ax.set_title(f"fastnn bench {primary_note}")
    if series and values:
        below_axis = -0.12 - 0.25 / len(results)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, below_axis), ncol=len(series), frameon=False)
    return fig


def write_plot(path, results, impls, primary_note):
    _plot.save(speedup_figure(results, impls, primary_note), path)


# ----------------------------------------------------------------------------

def run(args):
    settings = dict(QUICK if args.quick else DEFAULTS)
    if args.repeat is not None:
        settings["repeat"] = args.repeat
    if args.warmup is not None:
        settings["warmup"] = args.warmup
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    settings.update(quick=bool(args.quick), clock=args.clock)
    counts = args.threads
    if args.clock == "cpu" and counts != [1]:
        return _fail("--clock cpu needs --threads 1 (CPU time adds up the threads; it is not a time per call "
                     "with several)")
    workloads = args.only if args.only is not None else list(B.WORKLOADS)

    # Options that would only fail after minutes of timing are checked first.
    if args.plot:
        why = _plot.matplotlib_error()
        if why is not None:
            return _fail(f"--plot needs matplotlib, which could not be imported ({why}; pip install matplotlib)")
    for option, attr in (("--plot", "plot"), ("--json", "json_path"), ("--markdown", "markdown")):
        path = getattr(args, attr)
        try:
            if path:  # the paths written are the checked ones, ~ expanded
                setattr(args, attr, _plot.plot_path(path) if option == "--plot" else _plot.check_writable(path))
        except ValueError as exc:
            return _fail(f"{option} {exc}")

    status = B.implementation_status(args.impl)
    impls = [i for i in args.impl if status[i][0]]
    # numpy first: its results are the reference the others are checked against.
    impls.sort(key=lambda i: (i != "numpy", B.IMPLEMENTATIONS.index(i)))
    if not impls:
        return _fail("none of the implementations asked for is available: "
                     + "; ".join(f"{i}: {status[i][1]}" for i in args.impl))
    primary = "native" if "native" in impls else impls[0]

    reports = []
    for n in counts:
        if len(counts) > 1:
            print(f"==== {n} thread{'s' if n > 1 else ''} ====", flush=True)
        peak = args.peak_gflops * n / counts[0] if args.peak_gflops else None
        reports.append(_run_at(args, dict(settings, threads=n), workloads, impls, primary, status, peak))
        if len(counts) > 1:
            print()

    if len(counts) == 1:
        report = reports[0]
    else:
        turns = []
        if "native" in impls:
            print(f"==== fastnn native at {', '.join(map(str, counts))} threads in turns ====", flush=True)
            # the workloads whose native cell gave checked timings at every count in the tables
            sound = [w for w in workloads
                     if all("median_ms" in cell and cell.get("check") != "mismatch"
                            for rep in reports for r in rep["results"] if r["key"] == w.key
                            for cell in [r["timings"].get("native", {})])]
            steps = len(sound) * len(counts) * len(_round_sizes(settings["repeat"], settings["rounds"]))
            progress = Progress(steps, enabled=not args.no_progress)
            turns = scaling_in_turns(sound, counts, settings, progress)
            progress.close()
        runs = {r["settings"]["threads"]: r["results"] for r in reports}
        scaling = scaling_rows(runs, impls, turns)
        scaling_targets = B.evaluate_scaling_targets(turns)
        print(format_scaling(scaling, counts))
        if scaling_targets:
            print("\n" + format_scaling_targets(scaling_targets))
        report = {"schema": "fastnn-bench-scaling/1", "date": reports[0]["date"],
                  "command": _command_line(args), "threads": counts, "runs": reports,
                  "scaling": [{f: {str(n): x for n, x in v.items()} if isinstance(v, dict) else v
                               for f, v in r.items()} for r in scaling],
                  "scaling_targets": scaling_targets}
    def write_json(path):
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)

    def write_markdown(path):
        with open(path, "w", encoding="utf-8") as fh:
            if len(counts) == 1:
                fh.write(format_markdown(report))
            else:
                for r in reports:
                    fh.write(f"### {r['settings']['threads']} thread(s)\n\n" + format_markdown(r) + "\n")
                fh.write("### Scaling\n\n```\n" + format_scaling(scaling, counts) + "\n"
                         + (("\n" + format_scaling_targets(scaling_targets) + "\n") if scaling_targets else "")
                         + "```\n")

    def write_figure(path):
        machine = reports[0]["machine"]
        if len(counts) == 1:
            note = f"({counts[0]} thread{'s' if counts[0] > 1 else ''}, {machine['date']}"
            note += ")" if "native" in impls else "; native kernels not built)"
            write_plot(path, reports[0]["results"], impls, note)
        else:
            write_scaling_plot(path, scaling, counts, primary, f"({machine['date']})")

    print()
    unwritten = False
    for option, path, write in (("--json", args.json_path, write_json), ("--markdown", args.markdown, write_markdown),
                                ("--plot", args.plot, write_figure)):
        if path:
            try:
                write(path)
                print(f"wrote {path}")
            except (OSError, ValueError) as exc:  # checked before the run; the disk may still fill up
                print(f"fastnn bench: error: {option} {path} was not written: {exc}", file=sys.stderr)
                unwritten = True
    failed = any("error" in c or c.get("check") == "mismatch"
                 for r in reports for row in r["results"] for c in row["timings"].values())
    return 1 if failed or unwritten else 0


def _run_at(args, settings, workloads, impls, primary, status, peak_gflops):
    """The table at settings["threads"] threads, printed; returns its report (the JSON of one count)."""
    threads = settings["threads"]
    with B.thread_limits(threads, use_torch="torch" in impls) as applied:
        machine = B.machine_info(threads, peak_gflops, applied, clock=args.clock)
        machine["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if "torch" in impls:
            torch = B.import_torch()
            machine["torch"] = f"{torch.__version__}, {torch.get_num_threads()} thread(s)"
        machine["malloc_keeps_freed_memory"] = fastnn.keep_freed_memory()
        print(format_machine(machine, settings))
        if machine["malloc_keeps_freed_memory"]:
            print("  malloc   : freed memory stays in the process for every implementation "
                  "(fastnn.keep_freed_memory), so no timing includes page faults of re-allocated outputs")
        for impl in args.impl:
            if not status[impl][0]:
                print(f"  skipped  : {B.IMPLEMENTATION_LABELS[impl]}: {status[impl][1]}")
        print(flush=True)
        steps = len(workloads) * len(impls) * len(_round_sizes(settings["repeat"], settings["rounds"]))
        progress = Progress(steps, enabled=not args.no_progress)
        results = run_benchmarks(workloads, impls, settings, machine, progress)
        progress.close()

    print(format_table(results, impls, primary, args.clock))
    targets = B.evaluate_targets(results)
    if targets:
        print("\n" + format_targets(targets))
    return {
        "schema": "fastnn-bench/1",
        "date": machine["date"],
        "command": _command_line(args, threads),
        "settings": {**settings, "workloads": [w.key for w in workloads], "implementations": impls},
        "machine": machine,
        "implementations": {i: {"label": B.IMPLEMENTATION_LABELS[i], "available": status[i][0],
                                "reason": status[i][1]} for i in args.impl},
        "primary": primary,
        "results": results,
        "targets": targets,
    }
