#!/usr/bin/env bash
# The wheel is the product: build the sdist and the wheel, check them with twine, install the
# wheel alone into a fresh virtual environment outside the source tree, and run every
# user-facing command there. A file the package needs at run time that the wheel lacks fails here.
#
#   bash scripts/check_wheel.sh            # uses .venv's python for build and twine
#   KEEP=1 bash scripts/check_wheel.sh     # keep the work folder (printed) for a look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_PY=${BUILD_PY:-$ROOT/.venv/bin/python}
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dinomask-wheel.XXXXXX")
[ "${KEEP:-0}" = 1 ] && echo "wheel check: work folder $WORK" || trap 'rm -rf "$WORK"' EXIT
say() { echo "wheel check: $*"; }
fail() { echo "wheel check FAILED: $*" >&2; exit 1; }

# 1. build from a clean copy of the tracked files (no build/ or egg-info left over from here)
git ls-files -z | (mkdir -p "$WORK/src" && xargs -0 cp --parents -t "$WORK/src")
"$BUILD_PY" -m build --quiet --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "build"; }
"$BUILD_PY" -m twine check --strict "$WORK"/dist/* || fail "twine check"
WHEEL=$(ls "$WORK"/dist/*.whl)
VERSION=$(basename "$WHEEL" | cut -d- -f2)
say "built $(cd "$WORK/dist" && ls | tr '\n' ' ')"

# 2. a fresh environment that cannot see the source tree; torch first, CPU-only where none is cached
"$PY" -m venv "$WORK/venv"
VPIP=("$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check)
"${VPIP[@]}" "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
"${VPIP[@]}" "$WHEEL[serve,onnx]" 2>&1 | grep -v "^WARNING: Location" || true
"$WORK/venv/bin/python" -c "import dinomask" || fail "the wheel did not install"
export PATH="$WORK/venv/bin:$PATH" HF_HUB_OFFLINE=1 DINOMASK_CACHE="$WORK/cache"
unset PYTHONPATH
mkdir "$WORK/user" && cp -r "$ROOT/examples/dog" "$WORK/user/dog"
cd "$WORK/user"

# 3. the package is the installed one, with its type marker and static files
python - "$WORK/venv" <<'EOF' || fail "import"
import sys
from importlib import resources
from pathlib import Path

import dinomask

where = Path(dinomask.__file__).resolve()
assert str(where).startswith(str(Path(sys.argv[1]).resolve())), f"imported from {where}, not the fresh environment"
files = resources.files("dinomask")
for name in ("py.typed", "serve/static/index.html", "serve/static/app.js", "serve/static/style.css"):
    assert files.joinpath(name).is_file(), f"the wheel lacks dinomask/{name}"
print(f"wheel check: import dinomask {dinomask.__version__} from {where.parent}")
EOF

# 4. the commands a user runs
[ "$(dinomask --version)" = "dinomask $VERSION" ] || fail "dinomask --version says '$(dinomask --version)', the wheel is $VERSION"
dinomask random-model model >/dev/null || fail "random-model"
dinomask reference dog/reference.jpg --mask dog/reference_mask.png -o dog.npz --model model --label dog 2>/dev/null \
  || fail "reference on the bundled example"
dinomask remove dog/frames -r dog.npz -o out -q 2>/dev/null || fail "remove on the bundled example"
[ "$(ls out | wc -l)" = "$(ls dog/frames | wc -l)" ] || fail "remove wrote $(ls out | wc -l) files for $(ls dog/frames | wc -l) frames"
say "reference + remove on the bundled example: $(ls out | wc -l) outputs"

# 5. serve answers its page, its static files, /openapi.json and /v1/health with the version
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
dinomask serve --model model --port "$PORT" >serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
python - "$PORT" "$VERSION" <<'EOF' || { cat serve.log >&2; fail "serve"; }
import json
import sys
import time
import urllib.request

port, version = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
deadline = time.time() + 120
while True:
    try:
        health = json.load(urllib.request.urlopen(f"{base}/v1/health", timeout=5))
        break
    except OSError:
        if time.time() > deadline:
            raise SystemExit("serve did not answer /v1/health within 120 s")
        time.sleep(0.5)
assert health["version"] == version, health
page = urllib.request.urlopen(f"{base}/", timeout=10).read().decode()
assert "<html" in page.lower(), page[:200]
for static in ("app.js", "style.css"):
    assert f"/static/{static}" in page, f"the page does not link /static/{static}"
    body = urllib.request.urlopen(f"{base}/static/{static}", timeout=10).read()
    assert len(body) > 100, static
schema = json.load(urllib.request.urlopen(f"{base}/openapi.json", timeout=10))
assert schema["info"]["version"] == version and "/v1/remove" in schema["paths"], schema["info"]
print(f"wheel check: serve answered /, /static/app.js, /static/style.css, /openapi.json and /v1/health (version {version})")
EOF
say "passed: the wheel alone runs every user-facing command"
