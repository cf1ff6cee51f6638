#!/usr/bin/env bash
# The GPU check in one go, on one H200 in about 6 minutes: env, encode throughput and MFU (LLaVA-OneVision-7B and
# Qwen2-VL-7B, random weights, bf16, sdpa, against the reference loop), torch exact search at 1M × 1024 and
# 1M × 3584 against the CPU, and the GPU-marked tests. Every step writes its record into ONE JSON file
# ($OUT/gpu_check.json, or ./gpu_check.json), so a step that overruns its limit loses only its own rows.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, with pip and a network: faiss-cpu + setuptools into .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (carry .whl); the JSON lands in $OUT
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --cpu-smoke   # the same steps on the CPU at toy sizes
#
# The GPU image has torch, transformers, peft, pyarrow (and typer, rich, pyyaml, pytest) but no FAISS; faiss-gpu
# wheels (135 MB) do not fit the 64 MiB a call carries, faiss-cpu (19 MB) does and gives the FAISS CPU rows and the
# FAISS-dependent tests. uniretrieve is installed editable into the machine's Python (bare, given back after).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WHEELS="$ROOT/.whl"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" "faiss-cpu==1.15.1" "setuptools>=77"
    du -sh "$WHEELS"
    exit 0
fi

SMOKE=()
[[ "${1:-}" == "--cpu-smoke" ]] && SMOKE=(--cpu-smoke)
OUTDIR="${OUT:-$ROOT}"
JSON="$OUTDIR/gpu_check.json"
rm -f "$JSON"
# checkpoints (16 GB each, written and read back once) in memory where /dev/shm is large enough
WORK=/tmp/uniretrieve-gpu-check
[[ $(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1) -gt 40 ]] && WORK=/dev/shm/uniretrieve-gpu-check
PY="${PYTHON:-python3}"  # the smoke run uses the caller's environment (PYTHON=.venv/bin/python)
if [[ ${#SMOKE[@]} -eq 0 ]]; then
    # The GPU machine is bare and given back afterwards: install into its own Python (itself a venv, so a nested
    # --system-site-packages venv would not see its torch).
    export PYTHONUNBUFFERED=1
    if compgen -G "$WHEELS/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl || echo "wheel install failed"
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . || echo "uniretrieve install failed"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUTDIR/nvidia-smi.txt"
fi

step() {  # step NAME SECONDS
    echo "== $1 (limit $2 s) $(date -u +%T)"
    timeout --kill-after=5 "$2" "$PY" -m benchmarks.gpu_check --step "$1" --out "$JSON" --work "$WORK" "${SMOKE[@]}" \
        2>&1 | tee -a "$OUTDIR/gpu_check.log" | cut -c1-400
    rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then  # killed at its limit or crashed: say so in the JSON
        "$PY" - "$JSON" "$1" "$rc" "$2" <<'EOF'
import json, sys
from pathlib import Path
path, step, rc, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = json.loads(path.read_text()) if path.exists() else {"benchmark": "gpu_check"}
data.setdefault("steps", {}).setdefault(step, {})["exit"] = f"exit {rc}" + (f" (over its {limit} s limit)" if rc in (124, 137) else "")
path.write_text(json.dumps(data, indent=2))
EOF
    fi
}

step env 40
step encode:llava-onevision-7b 110
step encode:qwen2-vl-7b 110
step exact 90
step tests 50
echo "== done $(date -u +%T): $JSON"
