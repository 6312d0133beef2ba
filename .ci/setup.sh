#!/usr/bin/env bash
# Sets up the project's own virtual environment; called by the Makefile (`make setup`).
#
#   setup.sh venv      find Python 3.11 or 3.12 (or use $PYTHON) and create $VENV unless it exists
#   setup.sh install   Debian packages (as root), then torch (CPU build) and the project into $VENV
#
# Environment: VENV (default .venv), PYTHON (an interpreter to create the venv with; default: the
# first of python3.12, python3.11, python3 that is 3.11 or 3.12), TORCH_INDEX_URL (where the torch
# wheel comes from; default the CPU-only index, because PyPI's Linux torch is a multi-GB CUDA build;
# set it to e.g. https://download.pytorch.org/whl/cu128 on a GPU machine, or to "" to use pip's own
# configuration), VENV_OPTS (extra options for `python -m venv`, e.g. --system-site-packages).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}

say() { printf 'setup: %s\n' "$*" >&2; }
is_supported() {  # is $1 a Python 3.11 or 3.12?
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' >/dev/null 2>&1
}
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {  # apt_install PACKAGE...: once, after apt-get update; only as root
  as_root || return 1
  say "installing Debian packages: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

find_python() {
  if [ -n "${PYTHON:-}" ]; then
    command -v "$PYTHON" >/dev/null 2>&1 || { say "PYTHON=$PYTHON: not found"; exit 1; }
    is_supported "$PYTHON" || { say "PYTHON=$PYTHON is not Python 3.11 or 3.12"; exit 1; }
    command -v "$PYTHON"
    return
  fi
  for candidate in python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && is_supported "$candidate"; then
      command -v "$candidate"
      return
    fi
  done
  say "no Python 3.11 or 3.12 found (tried python3.12, python3.11, python3); install one"
  say "(Debian 12: apt-get install python3 python3-venv) or name it: make PYTHON=/path/to/python3.11"
  exit 1
}

create_venv() {
  if [ -x "$VENV/bin/python" ]; then
    is_supported "$VENV/bin/python" || {
      say "$VENV exists but is not Python 3.11 or 3.12: remove it, or use another: make VENV=DIR"
      exit 1
    }
    return  # reused
  fi
  local py
  py=$(find_python)
  # Debian splits venv/ensurepip into python3.X-venv.
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    local pkg
    pkg=python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv
    apt_install "$pkg" || { say "$py cannot create virtual environments: install $pkg (as root)"; exit 1; }
  fi
  say "creating $VENV with $py ($("$py" -V 2>&1))"
  # shellcheck disable=SC2086  # VENV_OPTS is a list of options
  "$py" -m venv ${VENV_OPTS:-} "$VENV"
}

install() {
  [ -x "$VENV/bin/python" ] || { say "$VENV does not exist: run 'make setup'"; exit 1; }
  local vpy="$VENV/bin/python"
  # Debian packages the tests use: a real MQTT broker and a real browser (WebRTC client).
  local need=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  if [ ${#need[@]} -gt 0 ] && ! apt_install "${need[@]}"; then
    say "please install the Debian packages ${need[*]} (not root; the tests that need them will skip)"
  fi
  # torch first, from the CPU index: the project's "models" extra would otherwise pull CUDA torch.
  if ! "$vpy" -c 'import torch' >/dev/null 2>&1; then
    say "installing torch $TORCH_VERSION into $VENV from ${TORCH_INDEX_URL:-the configured index}"
    local index=()
    # --retries 0: an unreachable index (an offline mirror) fails in a second instead of minutes.
    [ -n "$TORCH_INDEX_URL" ] && index=(--extra-index-url "$TORCH_INDEX_URL" --retries 0)
    "$vpy" -m pip install --quiet --disable-pip-version-check "${index[@]}" "torch==$TORCH_VERSION"
  fi
  say "installing llm-sap and its extras into $VENV"
  "$vpy" -m pip install --quiet --disable-pip-version-check -e ".[dev,stream,models]"
}

case "${1:-}" in
  venv) create_venv ;;
  install) install ;;
  *) say "usage: $0 venv|install"; exit 2 ;;
esac
