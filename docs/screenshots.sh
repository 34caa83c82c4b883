#!/usr/bin/env bash
# Screenshots of a real run in a real TensorBoard, taken with headless Chromium (Debian's
# `chromium` package). Usage: docs/screenshots.sh RUN_DIR [OUT_DIR]
set -euo pipefail
run=${1:?usage: docs/screenshots.sh RUN_DIR [OUT_DIR]}
out=${2:-docs/img}
port=${PORT:-6123}
mkdir -p "$out"
.venv/bin/tensorboard --logdir "$run/tb" --port "$port" --host 127.0.0.1 >/tmp/tb_shot.log 2>&1 &
tb=$!
trap 'kill $tb 2>/dev/null' EXIT
for _ in $(seq 60); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 1; done
shot() {  # shot NAME FRAGMENT
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=1600,1100 \
    --virtual-time-budget=20000 --screenshot="$out/$1.png" \
    "http://127.0.0.1:$port/#$2" 2>/dev/null
}
shot tensorboard_scalars "scalars&tagFilter=train&_smoothingWeight=0"
shot tensorboard_eval "scalars&tagFilter=eval%2FAP%2F&_smoothingWeight=0"
shot tensorboard_images images
shot tensorboard_hparams hparams
echo "screenshots in $out"
