#!/usr/bin/env bash
# Build the synthkit-med wheel and install it into a fresh venv, as `pip install synthkit-med`
# would: then sample with the shipped demo-latent model, evaluate and privacy-check the result
# with the default (deepbet) features, all on tiny inputs. Nothing downloads but the packages.
#   usage: .ci/wheel_smoke.sh [PYTHON] [TORCH_PIN]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-python3}"
TORCH="${2:-torch==2.13.0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/synthkit-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "wheel-smoke: building the wheel"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/dist" .
WHEEL="$(ls "$WORK"/dist/synthkit_med-*.whl)"
# (listed to a file first: `unzip | grep -q` can end in SIGPIPE, which pipefail counts as failure)
"$PYTHON" -m zipfile -l "$WHEEL" > "$WORK/wheel.txt"
for member in "synthkit/assets/features/deepbet_encoder.safetensors" \
              "synthkit/assets/models/demo-latent/model.safetensors" "dist-info/licenses/NOTICE" \
              "dist-info/licenses/LICENSE"; do
  grep -q "$member" "$WORK/wheel.txt" || { echo "wheel-smoke: FAILED: $member is not in the wheel"; exit 1; }
done

echo "wheel-smoke: fresh venv, $TORCH, then the wheel"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$TORCH"
echo "$TORCH" > "$WORK/constraints.txt"
"$PY" -m pip install -q -c "$WORK/constraints.txt" "$WHEEL"
# the plain install must not bring the dev tools nor deepbet's GUI dependencies
for absent in pytest monai ruff nnunetv2 deepbet customtkinter; do
  if "$PY" -m pip show -q "$absent" >/dev/null 2>&1; then
    echo "wheel-smoke: FAILED: $absent was installed by a plain install"; exit 1
  fi
done

SK="$WORK/venv/bin/synthkit"
cd "$WORK"  # not the source tree: only the installed package is importable
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export HF_HUB_OFFLINE=1  # nothing below may download: the shipped models and features are in the wheel
"$PY" -c "import synthkit, sys; assert '/venv/' in synthkit.__file__, synthkit.__file__"
"$SK" --version
echo "wheel-smoke: synthkit cohort demo / sample --model demo-latent / evaluate / privacy"
"$SK" cohort demo real --n 6 --size 32 --seed 0 --quiet
"$SK" sample real --model demo-latent --out synth --sampler ddim --steps 2 --quiet
test "$(ls synth/imagesTr | wc -l)" = 6
"$SK" evaluate real synth --n-boot 10 --diversity-pairs 2 --seg-steps 50 --no-cache --json eval.json --quiet
"$PY" - <<'EOF'
import json
r = json.load(open("eval.json"))
text = json.dumps(r)
assert "deepbet" in text, "the default extractor was not deepbet"
print("wheel-smoke: evaluate used", [k for k in ("features", "extractor") if k in r] or "deepbet")
EOF
"$SK" privacy real synth --shape 24 --json privacy.json --quiet
"$PY" -c "import json; d = json.load(open('privacy.json')); assert len(d['volumes']) == 6, d.keys()"
echo "wheel-smoke: OK"
