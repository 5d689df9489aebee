#!/usr/bin/env bash
# npm run lint: rustfmt, then clippy with -D warnings for the Linux host, the portable Unix
# layer (cargo feature generic-unix, the one macOS runs), and the macOS and Windows targets
# (core and binding). A target that is not installed is added with rustup; if that fails the
# output says "SKIPPED" for it: it never passes silently.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rustfmt"
cargo fmt --all --check

echo "== clippy: host $(rustc -vV | sed -n 's/^host: //p')"
cargo clippy --workspace --all-targets --quiet -- -D warnings

if [ "$(uname -s)" = Linux ]; then
  echo "== clippy: host with the generic Unix layer (feature generic-unix)"
  cargo clippy -p workspace-lock-core --all-targets --features generic-unix --quiet -- -D warnings
  cargo clippy -p pi-crew-workspace-lock --features generic-unix --quiet -- -D warnings
fi

# napi-build needs a libnode to link a windows-gnu addon against (napi-rs issue #2001); the
# N-API symbols are looked up at run time (napi's dyn-symbols), so an empty one does.
stub=target/libnode-stub
mkdir -p "$stub" && : > "$stub/libnode.dll" && printf '!<arch>\n' > "$stub/libnode.a"
export LIBNODE_PATH="$PWD/$stub"

# macOS has no C compiler here but zig's (PyPI `ziglang`, which .ci/run installs): with it
# the backend's TLS stack (ring) compiles its C for clippy. cc-rs spells the target in a way
# zig does not read, so a wrapper drops that argument.
zig_cc() {
  local target=$1 arch=${1%%-*}
  python3 -c 'import ziglang' >/dev/null 2>&1 || return 1
  mkdir -p target/zig
  cat > "target/zig/cc-$target" <<EOF_CC
#!/bin/sh
for a in "\$@"; do shift; case "\$a" in --target=*) ;; *) set -- "\$@" "\$a" ;; esac; done
exec python3 -m ziglang cc -target $arch-macos "\$@"
EOF_CC
  printf '#!/bin/sh\nexec python3 -m ziglang ar "$@"\n' > target/zig/ar
  chmod +x "target/zig/cc-$target" target/zig/ar
  echo "$PWD/target/zig/cc-$target"
}

skipped=()
for target in x86_64-apple-darwin aarch64-apple-darwin x86_64-pc-windows-gnu x86_64-pc-windows-msvc; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    if ! rustup target add "$target" >/dev/null 2>&1; then
      echo "== clippy: $target SKIPPED: the target is not installed and rustup could not add it"
      skipped+=("$target")
      continue
    fi
  fi
  echo "== clippy: $target"
  cargo clippy -p workspace-lock-core --all-targets --target "$target" --quiet -- -D warnings
  if [ "$target" = x86_64-pc-windows-gnu ] && command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
    # With the PostgreSQL backend: its TLS stack (ring) compiles C with mingw-w64.
    cargo clippy -p workspace-lock-pg -p pi-crew-workspace-lock --all-targets --target "$target" --quiet -- -D warnings
  elif [ "$target" = x86_64-apple-darwin ] && cc=$(zig_cc "$target"); then
    # One Apple target with the backend is enough (its code has nothing per architecture),
    # and it keeps the clean-clone run short: aarch64 is checked without it below.
    apple_backend=$target
    echo "   (with the postgres feature: ring's C compiled by zig cc)"
    var=${target//-/_}
    env "CC_$var=$cc" "AR_$var=$PWD/target/zig/ar" \
      cargo clippy -p workspace-lock-pg -p pi-crew-workspace-lock --all-targets --target "$target" --quiet -- -D warnings
  else
    # The postgres feature's TLS stack (ring) compiles C for the target, which needs that
    # target's C compiler (MSVC's; for macOS zig's, from `pip install ziglang`): not here.
    # Its Rust is the same on every platform, checked for the host above and for windows-gnu.
    if [ "$target" = aarch64-apple-darwin ] && [ -n "${apple_backend:-}" ]; then
      echo "   (binding without the postgres feature: the backend is checked for $apple_backend)"
    else
      echo "   (binding without the postgres feature: no C compiler for $target here)"
    fi
    cargo clippy -p pi-crew-workspace-lock --no-default-features --target "$target" --quiet -- -D warnings
  fi
done
if [ ${#skipped[@]} -gt 0 ]; then
  echo "lint: passed, but NOT checked for: ${skipped[*]}"
else
  echo "lint: passed for the host, generic Unix, macOS x64/arm64 and Windows gnu/msvc"
fi
