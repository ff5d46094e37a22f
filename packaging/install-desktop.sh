#!/usr/bin/env bash
# Put LoRA Studio in the desktop's application menu, for a lora-studio installed with pip or pipx.
#
#   bash packaging/install-desktop.sh               # into ~/.local/share (XDG_DATA_HOME)
#   bash packaging/install-desktop.sh --uninstall   # take it out again
#   EXEC=/path/to/lora-studio bash packaging/install-desktop.sh
#                                                   # a lora-studio not on the PATH (a venv, a frozen app)
#
# Installs the desktop entry, the AppStream metadata and the icon (SVG and PNGs) under the XDG
# data folder. With EXEC, or when lora-studio is not on the PATH of a session started from the
# menu, the entry's Exec= line carries the absolute path instead.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
ID=io.github.lorastudio.LoRAStudio
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
ICONS="$DATA/icons/hicolor"

targets=(
  "$DATA/applications/$ID.desktop"
  "$DATA/metainfo/$ID.metainfo.xml"
  "$ICONS/scalable/apps/$ID.svg"
  "$ICONS/128x128/apps/$ID.png"
  "$ICONS/256x256/apps/$ID.png"
)

refresh() {  # caches are optional: desktops that have the tools use them, the others rescan
  command -v update-desktop-database >/dev/null && update-desktop-database -q "$DATA/applications" || true
  command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$ICONS" 2>/dev/null || true
}

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "${targets[@]}"
  refresh
  echo "LoRA Studio removed from $DATA"
  exit 0
fi

EXEC="${EXEC:-$(command -v lora-studio || true)}"
if [ -z "$EXEC" ]; then
  echo "install-desktop.sh: lora-studio is not on the PATH; install it first (pip install . or pipx install .)," >&2
  echo "or give its path: EXEC=/path/to/lora-studio bash $0" >&2
  exit 2
fi

install -D -m 644 "$HERE/$ID.metainfo.xml" "$DATA/metainfo/$ID.metainfo.xml"
install -D -m 644 "$ROOT/resources/icons/lora-studio.svg" "$ICONS/scalable/apps/$ID.svg"
install -D -m 644 "$ROOT/resources/icons/lora-studio-128.png" "$ICONS/128x128/apps/$ID.png"
install -D -m 644 "$ROOT/resources/icons/lora-studio-256.png" "$ICONS/256x256/apps/$ID.png"
mkdir -p "$DATA/applications"
# the absolute path: a menu launcher does not always see ~/.local/bin or a venv on its PATH
sed "s|^Exec=lora-studio|Exec=\"$EXEC\"|" "$HERE/$ID.desktop" > "$DATA/applications/$ID.desktop"
chmod 644 "$DATA/applications/$ID.desktop"
refresh
echo "LoRA Studio added to the application menu ($DATA/applications/$ID.desktop, Exec=$EXEC)"
