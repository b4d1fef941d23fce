#!/usr/bin/env bash
# Regenerates docs/telegram-demo.png: runs `healbot demo --telegram --html`, then screenshots the page with
# headless Chromium (Debian: `apt-get install -y chromium`). Not run by the tests.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
healbot="${HEALBOT:-$root/.venv/bin/healbot}"
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
if [[ -z "$chromium" ]]; then
    echo "chromium missing: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$healbot" demo --telegram --yes --html "$work/telegram-demo.html"
mkdir -p "$root/docs"
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --hide-scrollbars --force-device-scale-factor=1 \
    --screenshot="$root/docs/telegram-demo.png" --window-size="${WINDOW_SIZE:-900,1600}" \
    "file://$work/telegram-demo.html"
echo "wrote $root/docs/telegram-demo.png"
