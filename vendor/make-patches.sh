#!/usr/bin/env bash
# Writes vendor/quinn.patch and vendor/quinn-proto.patch: what Leasehold changed in its copies
# of the two crates, against the published sources as cargo unpacked them (vendor/PATCHES.md).
set -euo pipefail
cd "$(dirname "$0")"
for pair in quinn:quinn-0.11.12 quinn-proto:quinn-proto-0.11.19; do
  ours=${pair%%:*}
  theirs=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "${pair#*:}" | head -1)
  if [ -z "$theirs" ]; then
    echo "${pair#*:} is not unpacked in cargo's registry: 'cargo download' it, or build once without the [patch.crates-io] lines" >&2
    exit 1
  fi
  # diff exits 1 when the trees differ, which is the point.
  diff -ru "$theirs/src" "$ours/src" \
    | sed -e "s|^diff -ru $theirs/src\(\S*\) $ours/src|diff -ru a/src\1 b/src|" \
          -e "s|^--- $theirs/src\([^\t]*\).*|--- a/src\1|" \
          -e "s|^+++ $ours/src\([^\t]*\).*|+++ b/src\1|" > "$ours.patch" || true
done
