#!/usr/bin/env bash
# Every CUDA path of the product on a lent GPU, in one device call of at most 8 minutes; one summary table.
#
# Here, once (downloads two wheels and copies the dev route into git-ignored folders that the call carries):
#   bash tools/gpu_check.sh --prepare
# Then through the device tool, in one call:
#   run(command="bash tools/gpu_check.sh", carry=[".whl", ".gpu_data"], timeout_s=540)
# A rerun of what a spent budget skipped, e.g.: bash tools/gpu_check.sh --steps eval,retrieval --budget-s 200
# The table and logs land in $OUT (summary.md, summary.json, logs/). A dry run on a machine without a GPU:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 OUT=/tmp/gpucheck bash tools/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(faiss-cpu==1.15.1 poselib==2.0.5)  # the rest of what these steps import is on the device image
DATA=.gpu_data/nordland_trimmed_dev

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p .git/info
  for p in /.whl/ /.gpu_data/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  mkdir -p .gpu_data && rm -rf "$DATA" && cp -r ../shared/data/nordland_trimmed_dev "$DATA"
  du -sh .whl .gpu_data
  exit 0
fi

[[ -d "$DATA" ]] || DATA=../shared/data/nordland_trimmed_dev
[[ -d "$DATA" ]] || { echo "gpu_check: no Nordland dev route: run 'bash tools/gpu_check.sh --prepare' here first" >&2; exit 2; }
OUT=${OUT:?gpu_check: set OUT (the device tool sets it) to the folder for the summary}
if [[ -d .whl ]] && ! python3 -c "import faiss, poselib" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# DDS stays on this machine even though no step starts rclpy
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$((RANDOM % 100 + 1))
args=(--data "$DATA" --out "$OUT" --device "${GPU_CHECK_DEVICE:-cuda}")
[[ -n "${GPU_CHECK_QUICK:-}" ]] && args+=(--quick)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec python3 tools/gpu_check.py "${args[@]}" "$@"
