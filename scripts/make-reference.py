#!/usr/bin/env python3
"""Regenerates llama.cpp reference outputs for one GGUF file.

    scripts/make-reference.py MODEL.gguf                 # compare with the committed Q4_1 files
    scripts/make-reference.py MODEL.gguf --out DIR       # write DIR/greedy.jsonl
    scripts/make-reference.py --tensor-types MODEL.gguf...   # markdown table of tensor types

The cases (chat messages and tokenization texts) are those of the committed
tests/data/reference/greedy.jsonl and tokenization.jsonl, so every model file is
checked on the same prompts. Outputs have exactly their format; see
tests/data/reference/README.md.

llama.cpp runs through llama-cpp-python 0.3.36 built from source, CPU only, in
$HOME/.cache/candlelight/venv-reference (created on first use; the script then
re-runs itself there). CI does not run this script: its outputs are committed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

VERSION = "0.3.36"
ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "data" / "reference"
VENV = Path(os.environ.get("CANDLELIGHT_CACHE", Path.home() / ".cache" / "candlelight")) / "venv-reference"
# The CPU flags that produced the committed Q4_1 files (those of
# scripts/bench-setup.sh): AVX2, FMA, F16C, AVX-512 (F/CD/VL/DQ/BW) and VNNI, no
# -march=native, no AMX (its tiles crash llama_decode in VMs that do not grant
# tile state). Kernels with other vector widths sum in another order, and the
# greedy continuation then takes another branch after a near tie: an AVX2-only
# build reproduces 3 of the 8 committed Q4_1 continuations, this one all 8.
# So making references needs an x86 CPU with AVX-512 and VNNI.
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_TILE=OFF "
    "-DGGML_AMX_INT8=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAVA_BUILD=OFF "
    "-DGGML_CCACHE=OFF"
)
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512_vnni", "avx_vnni")
GGUF_DEPS = ["pyyaml", "tqdm", "requests"]
THREADS = 2
N_CTX = 2048
MAX_TOKENS = 48
EOS_ID = 2


def ensure_venv() -> None:
    """Re-runs this script inside the reference venv, building it if needed."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []))
    missing = [f for f in CPU_FLAGS if f not in flags]
    if missing:
        sys.exit(f"make-reference: this CPU lacks {' '.join(missing)}; the reference build needs them")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    stamp = VENV / ".cmake-args"
    if not (python.exists() and stamp.exists() and stamp.read_text() == f"{VERSION} {CMAKE_ARGS}"):
        print(f"make-reference: building llama-cpp-python {VERSION} in {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS, FORCE_CMAKE="1")
        subprocess.run(
            pip + ["--no-cache-dir", "--no-binary", "llama-cpp-python", f"llama-cpp-python=={VERSION}"],
            check=True,
            env=env,
        )
        stamp.write_text(f"{VERSION} {CMAKE_ARGS}")
    # gguf-py (from the llama.cpp sources, for --tensor-types) imports these.
    gguf_deps = VENV / ".gguf-deps"
    if not gguf_deps.exists():
        subprocess.run(pip + GGUF_DEPS, check=True)
        gguf_deps.write_text(" ".join(GGUF_DEPS))
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def read_jsonl(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def jsonl(rows: list) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def load(model: Path):
    from llama_cpp import Llama

    return Llama(
        model_path=str(model),
        n_ctx=N_CTX,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_gpu_layers=0,
        verbose=False,
    )


def greedy(llm, messages: list) -> dict:
    """Renders the chat with the GGUF's own template and decodes greedily."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llm._model  # the piece text of bos/eos has no public accessor
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=model.token_get_text(llm.token_eos()),
        bos_token=model.token_get_text(llm.token_bos()),
        add_generation_prompt=True,
    )
    prompt = formatter(messages=messages).prompt
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    out: list = []
    # A fresh prefill for every case: no KV reuse across cases.
    llm.reset()
    for tok in llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        if tok == EOS_ID:
            break
        out.append(tok)
        if len(out) == MAX_TOKENS:
            break
    return {
        "messages": messages,
        "rendered_prompt": prompt,
        "prompt_ids": prompt_ids,
        "greedy_ids": out,
        "greedy_text": llm.detokenize(out).decode("utf-8", errors="replace"),
    }


def tokenization(llm, text: str) -> dict:
    data = text.encode("utf-8")
    return {
        "text": text,
        "ids": llm.tokenize(data, add_bos=False, special=False),
        "ids_parse_special": llm.tokenize(data, add_bos=False, special=True),
    }


def diff(name: str, want: list, got: list) -> int:
    """Prints the cases that differ; returns their number."""
    n = 0
    for i, (w, g) in enumerate(zip(want, got)):
        for key in w:
            if w[key] != g.get(key):
                n += 1
                print(f"{name} case {i} `{key}` differs:\n  committed {w[key]!r}\n  now       {g.get(key)!r}")
    if len(want) != len(got):
        n += 1
        print(f"{name}: {len(want)} committed cases, {len(got)} now")
    return n


def tensor_types(models: list) -> None:
    """Prints, per tensor name pattern, the ggml types found in each file.

    Where a pattern mixes types across layers, each type lists its layers.
    """
    sys.path.insert(0, str(gguf_py()))
    from gguf import GGUFReader

    columns = {}
    for m in models:
        kinds: dict = {}
        for t in GGUFReader(m).tensors:
            layer = re.match(r"^blk\.(\d+)\.", t.name)
            key = re.sub(r"^blk\.\d+\.", "blk.N.", t.name)
            layers = kinds.setdefault(key, {}).setdefault(t.tensor_type.name, [])
            layers.append(int(layer.group(1)) if layer else -1)
        columns[Path(m).name] = kinds
    keys = sorted({k for kinds in columns.values() for k in kinds})
    print("| tensor | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for k in keys:
        cells = []
        for kinds in columns.values():
            types = kinds.get(k, {})
            if len(types) <= 1:
                cells.append(next(iter(types), "-"))
            else:
                cells.append(", ".join(f"{t} (layers {ranges(sorted(ls))})" for t, ls in sorted(types.items())))
        print(f"| `{k}` | " + " | ".join(cells) + " |")


def ranges(xs: list) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    runs: list = []
    for x in xs:
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def gguf_py() -> Path:
    """gguf-py from the same llama.cpp sources (scripts/build-llama-cpp.sh extracts them)."""
    cache = Path(os.environ.get("CANDLELIGHT_CACHE", Path.home() / ".cache" / "candlelight"))
    path = cache / "llama.cpp" / f"{VERSION}-src" / "llama.cpp" / "gguf-py"
    if not path.is_dir():
        subprocess.run([str(ROOT / "scripts" / "build-llama-cpp.sh"), "portable"], check=True, stdout=subprocess.DEVNULL)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="GGUF file(s)")
    ap.add_argument("--out", type=Path, help="write DIR/greedy.jsonl instead of comparing")
    ap.add_argument("--cases", type=Path, default=CASES, help="dir of the committed Q4_1 files")
    ap.add_argument("--tensor-types", action="store_true", help="print the tensor-type table")
    args = ap.parse_args()
    ensure_venv()
    if args.tensor_types:
        tensor_types(args.models)
        return 0
    if len(args.models) != 1:
        ap.error("one model file at a time")

    cases_greedy = read_jsonl(args.cases / "greedy.jsonl")
    cases_tok = read_jsonl(args.cases / "tokenization.jsonl")
    llm = load(args.models[0])
    got_greedy = [greedy(llm, c["messages"]) for c in cases_greedy]
    got_tok = [tokenization(llm, c["text"]) for c in cases_tok]

    # The tokenizer is the same in every requantized file: tokenization and
    # prompts must match the committed ones.
    bad = diff("tokenization", cases_tok, got_tok)
    if args.out:
        keys = ("messages", "rendered_prompt", "prompt_ids")
        bad += diff("greedy prompts", [{k: c[k] for k in keys} for c in cases_greedy], got_greedy)
        if bad:
            print(f"{bad} differences in tokenization or prompts: nothing written")
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "greedy.jsonl").write_text(jsonl(got_greedy), encoding="utf-8")
        print(f"wrote {args.out / 'greedy.jsonl'}")
        return 0
    bad += diff("greedy", cases_greedy, got_greedy)
    print(f"{bad} differences from {args.cases}")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
