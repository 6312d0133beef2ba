#!/usr/bin/env bash
# Installs everything the project and its tests need on a fresh Debian machine with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# torch: the CPU build (a plain "torch" would pull a multi-GB CUDA build).
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[dev,stream,models]"

# Debian packages used by the tests (a real MQTT broker, a real browser), when we may install them.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser test's real WebRTC client
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install Debian packages: ${need[*]} (tests that need them will skip)" >&2
  fi
fi
