"""Markdown tables for scripts/bench-server.sh, read from loadgen's result files.

Every table comes from loadgen's `result.json` (one step per run directory) and
`requests.csv` (for figures pooled over several turns). Latencies print in ms.
Ratio rows are candlelight / baseline for every column: above 1 is better for
throughputs, below 1 is better for latencies and memory.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

# Run-directory names (set by bench-server.sh) -> the names the tables show.
LABEL = {
    "candlelight": "candlelight",
    "candlelight-no-cache": "candlelight --no-prefix-cache",
    "llama-server": "llama-server",
    "llama-cpp-python": "llama_cpp.server",
}
BASELINE = "llama-server"


@dataclass
class Run:
    """One loadgen run: its step summary and its successful request rows."""

    step: dict
    rows: list[dict]
    resolved: dict
    server_info: dict
    command: str = ""
    tps_from_chunks: bool = False
    tps: Optional[float] = field(default=None)


def _read_rows(path: str) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("ok", "").lower() in ("true", "1")]
    except OSError:
        return []


def load_run(d: str) -> Optional[Run]:
    """The run in directory `d`, or None when loadgen left no result there."""
    try:
        with open(os.path.join(d, "result.json")) as f:
            doc = json.load(f)
        step = doc["steps"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return None
    run = Run(step=step, rows=_read_rows(os.path.join(d, "requests.csv")),
              resolved=doc.get("resolved") or {},
              server_info=(doc.get("environment") or {}).get("server_info") or {})
    try:
        with open(d + ".cmd") as f:
            run.command = f.read().strip()
    except OSError:
        pass
    run.tps = step["throughput"].get("output_tokens_per_s")
    secs = step["window"]["seconds"]
    if run.tps is None and run.rows and secs:
        # No server token counts (llama_cpp.server): one streamed chunk per token.
        run.tps = sum(int(r["chunks"] or 0) for r in run.rows) / secs
        run.tps_from_chunks = True
    return run


def stat(run: Optional[Run], metric: str, q: str = "p50") -> Optional[float]:
    if run is None:
        return None
    m = run.step.get(metric)
    return None if not m else m.get(q)


def ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else x * 1000


def nearest_rank(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile, as loadgen computes its own."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, -(-len(v) * q // 100))
    return v[int(k) - 1]


def fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


@dataclass
class Column:
    name: str
    get: Callable[[Run], Optional[float]]
    spec: str


def tps_cell(run: Run) -> Optional[float]:
    return run.tps


LOAD_COLUMNS = [
    Column("out tok/s", tps_cell, ".1f"),
    Column("TTFT p50 ms", lambda r: ms(stat(r, "ttft")), ".0f"),
    Column("ITL p50 ms", lambda r: ms(stat(r, "itl")), ".1f"),
    Column("ITL p99 ms", lambda r: ms(stat(r, "itl", "p99")), ".0f"),
    Column("E2E p50 ms", lambda r: ms(stat(r, "e2e")), ".0f"),
    Column("req/s", lambda r: r.step["throughput"].get("requests_per_s"), ".2f"),
]


def markdown(header: list[str], rows: Iterable[list[str]], left: int = 1) -> str:
    """A markdown table; the first `left` columns are left-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cells(run: Optional[Run], cols: list[Column]) -> list[str]:
    out = []
    for c in cols:
        v = None if run is None else c.get(run)
        s = fmt(v, c.spec)
        if run is not None and c.get is tps_cell and run.tps_from_chunks:
            s += "~"
        out.append(s)
    return out


def ratio_cells(a: Optional[Run], b: Optional[Run], cols: list[Column]) -> list[str]:
    if a is None or b is None:
        return ["n/a"] * len(cols)
    return [fmt_ratio(ratio(c.get(a), c.get(b))) for c in cols]


def run_notes(name: str, run: Optional[Run], expect_output: Optional[int]) -> list[str]:
    """Failures and surprises worth a line under the table."""
    if run is None:
        return [f"{name}: no result (see its loadgen log)"]
    notes = []
    req = run.step["requests"]
    if req.get("errors"):
        notes.append(f"{name}: {req['errors']} of {req.get('sent')} requests failed: "
                     f"{run.step.get('error_examples')}")
    out = run.step.get("output_tokens") or {}
    if expect_output and out.get("mean") is not None and abs(out["mean"] - expect_output) > 0.5:
        notes.append(f"{name}: {out['mean']:.1f} output tokens per request on average, "
                     f"not {expect_output}")
    if run.step.get("aborted"):
        notes.append(f"{name}: step aborted: {run.step['aborted']}")
    return notes


def commands(runs: dict[str, Optional[Run]]) -> list[str]:
    return [f"{LABEL.get(k, k)}: `{r.command}`" for k, r in runs.items() if r and r.command]


def loadavg_note(d: str) -> list[str]:
    try:
        with open(os.path.join(d, "loadavg.txt")) as f:
            return ["Load average (1/5/15 min) " + "; ".join(l.strip() for l in f if l.strip())]
    except OSError:
        return []


def section(title: str, table: str, notes: list[str]) -> str:
    body = [f"### {title}", "", table, ""]
    body += [f"- {n}" for n in notes]
    return "\n".join(body) + "\n"
