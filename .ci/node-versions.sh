#!/usr/bin/env bash
# Runs the Node test suite (`npm run test:node`) under each Node.js major version given
# (default: 20 22 24), with the same build of the addon: N-API is ABI-stable, so one
# `.node` serves every version, and that is part of what this proves.
#
#   bash .ci/node-versions.sh [--skip-current] [MAJOR...]
#
# Node binaries come from the npm registry only: the `node-<os>-<arch>` package (what the
# `node` package's installer fetches) holds `bin/node`. Each version is unpacked once into
# ${XDG_CACHE_HOME:-~/.cache}/pi-crew-workspace-lock/node-<version>/ and reused by later
# runs; with the registry unreachable, the newest cached version of that major is used.
# A lane that cannot run (no registry and nothing cached, an unsupported host) is an
# error, reported by name: nothing passes silently. WSLOCK_NODE_LANES_OPTIONAL=1 turns such
# a lane into a loud "NOT RUN" line and a non-failing exit (for offline work only).
#
# --skip-current: a major equal to the `node` on PATH is not run again (`.ci/run` has just
# run the whole `npm test` with it); the summary says so.
# --heavy-once: the heavy multi-process suites whose subject does not depend on the Node
# version (the Rust platform layer, hosts in namespaces, hundreds of SIGKILLs, fault
# injection) are left out of these lanes, having run under the machine's node in
# `npm test`; each lane says which.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_current=0
heavy_once=0
HEAVY="generic-unix multiprocess postgres-hosts faults"
majors=()
for a in "$@"; do
  case "$a" in
    --skip-current) skip_current=1 ;;
    --heavy-once) heavy_once=1 ;;
    [0-9]*) majors+=("$a") ;;
    *) echo "node-versions: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
[ ${#majors[@]} -gt 0 ] || majors=(20 22 24)

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pi-crew-workspace-lock"
mkdir -p "$cache"

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) os="" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) arch="" ;;
esac
pkg="node-$os-$arch"

current="$(node -p 'process.versions.node')"
current_major="${current%%.*}"

# Prints the bin/ directory of Node <major>, fetching it into the cache if needed; on
# failure prints why on stderr and returns 1.
node_bin() {
  local major="$1" version="" dir
  if [ -z "$os" ] || [ -z "$arch" ]; then
    echo "no npm package of Node for this host ($(uname -s) $(uname -m))" >&2
    return 1
  fi
  if [ "$os" = linux ] && [ -e /etc/alpine-release ]; then
    echo "the registry's $pkg is built for glibc; this host is musl (Alpine)" >&2
    return 1
  fi
  # The newest release of that major, as the registry lists it.
  if version="$(npm view "$pkg@$major" version --json 2>/dev/null | node -e '
      let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
        const v = JSON.parse(s); console.log(Array.isArray(v) ? v[v.length - 1] : v) })')" && [ -n "$version" ]; then
    dir="$cache/node-$version"
    if [ ! -x "$dir/bin/node" ]; then
      local tmp
      tmp="$(mktemp -d "$cache/.fetch-XXXXXX")"
      echo "node-versions: fetching $pkg@$version from the npm registry" >&2
      if ! (cd "$tmp" && npm pack "$pkg@$version" --silent >/dev/null && tar xzf "$pkg-$version.tgz"); then
        rm -rf "$tmp"
        echo "npm pack $pkg@$version failed" >&2
        return 1
      fi
      [ -x "$tmp/package/bin/node" ] || { rm -rf "$tmp"; echo "$pkg@$version holds no bin/node" >&2; return 1; }
      rm -rf "$dir.partial"
      mkdir -p "$dir.partial/bin"
      mv "$tmp/package/bin/node" "$dir.partial/bin/node"
      rm -rf "$dir"
      mv "$dir.partial" "$dir"
      rm -rf "$tmp"
    fi
  else
    # Offline: the newest cached version of that major, if any.
    dir="$(find "$cache" -maxdepth 1 -type d -name "node-$major.*" 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$dir" ] || [ ! -x "$dir/bin/node" ]; then
      echo "the npm registry did not answer for $pkg@$major and no Node $major is cached in $cache" >&2
      return 1
    fi
    echo "node-versions: registry unreachable; using the cached $(basename "$dir")" >&2
  fi
  echo "$dir/bin"
}

summary=()
failed=0
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
for major in "${majors[@]}"; do
  : >"$errors"
  if [ "$skip_current" = 1 ] && [ "$major" = "$current_major" ]; then
    summary+=("Node $major: v$current (the machine's node) ran the whole npm test above")
    continue
  fi
  if [ "$major" = "$current_major" ]; then
    bin="$(dirname "$(command -v node)")"
  elif ! bin="$(node_bin "$major" 2>"$errors")"; then
    cat "$errors" >&2
    why="$(tail -n 1 "$errors")"
    if [ "${WSLOCK_NODE_LANES_OPTIONAL:-0}" = 1 ]; then
      summary+=("Node $major: NOT RUN ($why; WSLOCK_NODE_LANES_OPTIONAL=1)")
    else
      summary+=("Node $major: FAILED, could not get Node $major: $why")
      failed=1
    fi
    continue
  fi
  cat "$errors" >&2
  version="$("$bin/node" -p 'process.version')"
  started=$(date +%s)
  if [ "$heavy_once" = 1 ]; then
    files=()
    for f in __test__/*.test.mjs; do
      name=$(basename "$f" .test.mjs)
      case " $HEAVY " in *" $name "*) ;; *) files+=("$f") ;; esac
    done
    echo "=== Node $major lane: $version ($bin/node): node --test, all but the heavy suites run once above ($HEAVY)"
    run_lane() { PATH="$bin:$PATH" WSLOCK_EXPECT_NODE_MAJOR="$major" node --test --test-concurrency=1 "${files[@]}"; }
  else
    echo "=== Node $major lane: $version ($bin/node): npm run test:node"
    # npm itself runs under that node too (its shebang is `env node`).
    run_lane() { PATH="$bin:$PATH" WSLOCK_EXPECT_NODE_MAJOR="$major" npm run --silent test:node; }
  fi
  if run_lane; then
    summary+=("Node $major: $version passed in $(($(date +%s) - started)) s")
  else
    summary+=("Node $major: $version FAILED after $(($(date +%s) - started)) s")
    failed=1
  fi
done

echo "=== Node versions"
for line in "${summary[@]}"; do echo "  $line"; done
exit "$failed"
