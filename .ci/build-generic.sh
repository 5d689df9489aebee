#!/usr/bin/env bash
# Builds the binding with the portable Unix platform layer (cargo feature generic-unix, the
# layer macOS runs) into target/generic/, for __test__/generic-unix.test.mjs on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" != Linux ]; then
  echo "generic-unix build SKIPPED: only forced on Linux (elsewhere the native layer is tested)"
  exit 0
fi
cargo build --quiet -p pi-crew-workspace-lock --features generic-unix --target-dir target/generic
cp target/generic/debug/libpi_crew_workspace_lock.so target/generic/workspace-lock.generic.node
