#!/usr/bin/env bash
# One device call (docs/gpu.md): train the AdaWorld world model and its action-agnostic twin side by side on
# one GPU for the same wall-clock budget, then score both, and the shipped pair, on held-out push windows.
# Needs .device/ from scripts/device/pack.py (carried). Writes under $OUT: log.txt, probe.json and, where they
# fit the 16 MiB a returned file may have, the two models (config + weights + training summary).
#
#   MINUTES=6 PRESET=small BATCH=256 bash scripts/device/train_wm.sh      # INIT=0: from scratch
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to a folder for the results}
MINUTES=${MINUTES:-6}        # per model; both train at once
PRESET=${PRESET:-small}
BATCH=${BATCH:-256}
LR=${LR:-2e-4}               # constant, after the preset's warm-up steps
if [ "$PRESET" = small ]; then INIT=${INIT:-1}; else INIT=${INIT:-0}; fi  # 1: continue the shipped small pair
if [ "$INIT" = 1 ] && [ "$PRESET" != small ]; then
  echo "INIT=1 continues the shipped small models: it needs PRESET=small (got $PRESET)" >&2
  exit 2
fi
SHARES=${SHARES:-"0.25 0.75"}  # procgen-train, push: the shipped model's last stage
PY=${PYTHON:-python3}
RUNS=${RUNS:-/tmp/adaworld-runs}
WINDOWS=${WINDOWS:-512}     # held-out push windows in the probe
LIMIT_S=${LIMIT_S:-570}     # the call's timeout_s: MINUTES is cut so that training, probe and copies end inside it
RESERVE_S=${RESERVE_S:-120} # what comes on top of MINUTES: both runs' start and final save, the probe, the copies
mkdir -p "$OUT"
# At most 8 files come back from a device call: log.txt, probe.json and wm/, twin/ with 3 each. Add none.
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10

step() { echo "=== $(date +%T) $*"; }

step "install the carried wheels"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/wheels/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
$PY - <<'EOF' || exit 1
import torch, diffusers, gymnasium, accelerate, numpy
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
print("diffusers", diffusers.__version__, "gymnasium", gymnasium.__version__, "accelerate", accelerate.__version__, "numpy", numpy.__version__)
EOF
cli() { $PY -c 'import sys; from adaworld_gym.cli import main; sys.argv[0] = "adaworld"; main()' "$@"; }
LAM=adaworld_gym/assets/lam
DATA=".device/data/procgen-train .device/data/push"
PUSH_TEST=.device/data/push-test

step "smoke: a tiny model, 5 steps and a probe (fails fast on a device bug)"
rm -rf "$RUNS" && mkdir -p "$RUNS"
cli train-wm --lam $LAM --data $DATA --preset tiny --max-steps 5 --out "$RUNS/smoke" || exit 1
$PY -m benchmarks.world_model_probe --models "$RUNS/smoke/model" --lam $LAM --envs push --push-dir $PUSH_TEST \
  --windows 16 --denoise-steps 1 || exit 1

# --max-minutes counts the training loop only; a run past LIMIT_S is killed with nothing probed or returned.
left=$((LIMIT_S - SECONDS - RESERVE_S))
read -r budget cut < <($PY -c 'import sys; m, s = float(sys.argv[1]), int(sys.argv[2]) / 60; print(round(min(m, s), 2), int(s < m))' "$MINUTES" "$left")
if [ "$cut" = 1 ]; then
  echo "MINUTES=$MINUTES would end past LIMIT_S=${LIMIT_S}s (${SECONDS}s spent, ${RESERVE_S}s reserved): $budget min each"
  [ "$left" -ge 30 ] || exit 1
  MINUTES=$budget
fi
common="--data $DATA --shares $SHARES --preset $PRESET --batch-size $BATCH --lr $LR --max-minutes $MINUTES --threads 6"  # torch CPU threads (the diffusion noise is drawn on the GPU)
wm_init="" twin_init=""
if [ "$INIT" = 1 ]; then
  wm_init="--init-from adaworld_gym/assets/world_model"
  twin_init="--init-from benchmarks/weights/world_model_agnostic"
fi
step "train both for $MINUTES min: preset $PRESET, batch $BATCH, lr $LR, init $INIT"
cli train-wm --lam $LAM $common $wm_init --out "$RUNS/wm" > "$RUNS/wm.log" 2>&1 &
wm_pid=$!
cli train-wm --action-agnostic $common $twin_init --out "$RUNS/twin" > "$RUNS/twin.log" 2>&1 &
twin_pid=$!
# Read while both train (after they end it shows an idle GPU); never longer than the runs.
(sleep 90 >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv) &
smi_pid=$!
wait $wm_pid; wm_rc=$?
wait $twin_pid; twin_rc=$?
kill $smi_pid 2>/dev/null; wait $smi_pid 2>/dev/null
trained=() failed=""
for run in wm twin; do
  rc_var=${run}_rc
  echo "--- $run (rc ${!rc_var})"
  # A failed run shows its traceback, a finished one its last progress lines.
  tr '\r' '\n' < "$RUNS/$run.log" | grep -v '^\s*$' | tail -n "$([ "${!rc_var}" = 0 ] && echo 5 || echo 40)"
  cat "$RUNS/$run/summary.json" 2>/dev/null && echo
  if [ "${!rc_var}" = 0 ]; then trained+=("$run"); else failed+=" $run"; fi
done
# One failed run still leaves the other and the shipped pair to probe: the call is not rerun.
[ ${#trained[@]} -gt 0 ] || exit 1
models=()
for run in "${trained[@]}"; do models+=("$RUNS/$run/model"); done

step "probe: held-out push windows, the new pair beside the shipped pair"
$PY -m benchmarks.world_model_probe --lam $LAM --envs push --push-dir $PUSH_TEST --windows $WINDOWS --denoise-steps 1 3 \
  --models "${models[@]}" adaworld_gym/assets/world_model benchmarks/weights/world_model_agnostic \
  --out "$OUT/probe.json"
probe_rc=$?

step "return the models that fit"
for run in "${trained[@]}"; do
  weights="$RUNS/$run/model/diffusion_pytorch_model.safetensors"
  if [ "$(stat -c %s "$weights")" -le $((16 * 1024 * 1024)) ]; then
    mkdir -p "$OUT/$run"
    cp "$weights" "$RUNS/$run/model/config.json" "$OUT/$run/"
    cp "$RUNS/$run/summary.json" "$OUT/$run/train_summary.json"
  else
    echo "$run: weights over 16 MiB, not returned (probe.json holds its scores)"
  fi
done
[ $probe_rc = 0 ] || { echo "the probe failed (rc $probe_rc)"; exit $probe_rc; }
[ -z "$failed" ] || { echo "training failed:$failed"; exit 1; }
step done
