#!/usr/bin/env bash
# GPU smoke check (issue 6): MedP-CLIP ViT-B/16 at 224 px with region prompts, one GPU, 300 steps on the
# demo corpus; prints samples/s, the GPU memory peak and the share of step time spent waiting for data
# (goal: < 5 %). Under 5 minutes on an H100/H200 class GPU.
#
#   bench/gpu_smoke.sh prepare   on a CPU machine with the project's .venv (make setup): builds the demo
#                                corpus at --max-side 512 into out/gpu_smoke/corpus, and downloads the wheels
#                                a bare CUDA+PyTorch image lacks (open_clip, webdataset, pycocotools, …) into
#                                out/gpu_smoke/wheels. out/ is git-ignored; ~10 MB in all.
#   bench/gpu_smoke.sh run       on the GPU machine. With a working .venv that has Ray: the production path
#                                (Ray Train, one GPU worker). Otherwise (a stock PyTorch image, no network):
#                                installs the carried wheels into /tmp/site and runs the same training loop
#                                in one process without Ray (medpclip.train.loop.train_local).
#
# In this workplace's device tool: `bench/gpu_smoke.sh prepare` here, then
#   run(command="bash bench/gpu_smoke.sh run", carry=["out/gpu_smoke"], timeout_s=480)
# Results: bench/results/gpu_smoke.json (and $OUT/gpu_smoke.json when $OUT is set).
# Knobs (environment): STEPS=300 BATCH=128 LOADERS=12 (data loader processes) WINDOW=100.
set -euo pipefail
cd "$(dirname "$0")/.."
PREP=out/gpu_smoke
STEPS=${STEPS:-300}
BATCH=${BATCH:-128}
LOADERS=${LOADERS:-12}
WINDOW=${WINDOW:-100}

case "${1:-run}" in
prepare)
  test -x .venv/bin/medpclip || { echo "run 'make setup' first (needs the project's .venv)"; exit 2; }
  rm -rf "$PREP"
  mkdir -p "$PREP/wheels"
  export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} RAY_USAGE_STATS_ENABLED=0
  .venv/bin/medpclip demo-data "$PREP/raw"
  .venv/bin/medpclip build --spec demo_ct,demo_polyp,demo_cxr --raw-root "$PREP/raw" --out "$PREP/corpus" \
    --max-side 512
  rm -rf "$PREP/raw"
  # Pure-Python wheels plus pycocotools for CPython 3.12 (the device image's python3); versions as tested.
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$PREP/wheels" open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 webdataset==1.0.2 braceexpand==0.1.7 \
    pycocotools==2.0.11
  du -sh "$PREP/corpus" "$PREP/wheels"
  ;;
run)
  test -f "$PREP/corpus/sizes.json" || { echo "no $PREP/corpus: run 'bench/gpu_smoke.sh prepare' first"; exit 2; }
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import ray, open_clip, webdataset, torch; assert torch.cuda.is_available()" 2>/dev/null; then
    PY=.venv/bin/python
    MODE=ray
    export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} RAY_USAGE_STATS_ENABLED=0
  else
    PY=python3
    MODE=local
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$PREP"/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  RESULTS="${OUT:-bench/results}/gpu_smoke.json"
  PYTHONUNBUFFERED=1 timeout 290 "$PY" -m bench.gpu_smoke --corpus "$PREP/corpus" --mode "$MODE" \
    --steps "$STEPS" --batch-size "$BATCH" --loader-workers "$LOADERS" --window "$WINDOW" --json "$RESULTS"
  if [ -n "${OUT:-}" ]; then cp "$RESULTS" bench/results/gpu_smoke.json 2>/dev/null || true; fi
  ;;
*)
  echo "usage: bench/gpu_smoke.sh prepare|run" >&2
  exit 2
  ;;
esac
