#!/usr/bin/env python3
"""Before/after A/B of two engine bench binaries, run alternately on one machine.

    benches/engine_ab.py BEFORE AFTER [--runs N]          # whole bench, medians
    benches/engine_ab.py BEFORE AFTER --pairs N [--decode-seqs S | --prefill]

BEFORE and AFTER are engine bench executables (`cargo bench --bench engine
--no-run` prints the path; copy it aside before rebuilding). The first form runs
the native backend's whole bench (BENCH_SKIP_OTHERS=1) N times each, alternating
which goes first, and prints the median of each figure. The second form runs
one figure (BENCH_DECODE_ONLY or BENCH_PREFILL_ONLY, best of 3 per process) in
N back-to-back pairs and prints the median of the per-pair ratios, which
cancels the slow swings of a shared machine better than medians of whole runs.
Run from the repository root (the default model's path is relative).
"""
import argparse
import os
import re
import statistics
import subprocess

FIGURE = re.compile(r"\| ((?:single-stream|aggregate) decode[^|]*|prefill[^|]*) \| ([\d.]+) \|")


def whole_bench(exe, env):
    out = subprocess.run([exe, "--bench"], env=env, capture_output=True, text=True, check=True).stdout
    return {m.group(1).strip(): float(m.group(2)) for m in map(FIGURE.match, out.splitlines()) if m}


def one_figure(exe, env):
    out = subprocess.run([exe], env=env, capture_output=True, text=True, check=True).stdout
    return max(float(line.split()[-2]) for line in out.splitlines() if "tokens/s" in line)


def alternate(n, before, after, run):
    results = {"before": [], "after": []}
    for i in range(n):
        order = [("before", before), ("after", after)]
        for name, exe in order if i % 2 == 0 else reversed(order):
            results[name].append(run(exe))
    return results["before"], results["after"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int)
    ap.add_argument("--decode-seqs", type=int, default=1)
    ap.add_argument("--prefill", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, BENCH_SKIP_OTHERS="1", BENCH_THREADS=os.environ.get("BENCH_THREADS", "2"))
    if args.pairs:
        env["BENCH_PREFILL_ONLY" if args.prefill else "BENCH_DECODE_ONLY"] = "3"
        env["BENCH_DECODE_SEQS"] = str(args.decode_seqs)
        before, after = alternate(args.pairs, args.before, args.after, lambda e: one_figure(e, env))
        ratios = [a / b for a, b in zip(after, before)]
        what = "prefill, 512 tokens" if args.prefill else f"decode, {args.decode_seqs} sequences"
        print(f"{what}: before {statistics.median(before):.1f}, after {statistics.median(after):.1f} tokens/s "
              f"(medians); median after/before of {args.pairs} pairs {statistics.median(ratios):.3f}; "
              f"pairs {' '.join(f'{r:.2f}' for r in ratios)}")
        return
    before, after = alternate(args.runs, args.before, args.after, lambda e: whole_bench(e, env))
    print(f"| figure (tokens/s) | before (median of {args.runs}) | after | after / before | runs before | runs after |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for k in before[0]:
        b = [r[k] for r in before]
        a = [r[k] for r in after]
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"| {k} | {mb:,.1f} | {ma:,.1f} | {ma / mb:.3f} | {', '.join(f'{x:.0f}' for x in b)} | {', '.join(f'{x:.0f}' for x in a)} |")


if __name__ == "__main__":
    main()
