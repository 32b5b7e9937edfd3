#!/usr/bin/env bash
# vtaudit developer entry point: set-up on a fresh Debian machine, the demo, the tests.
#   ./run.sh demo   simulate a small election, then verify it: every check of spec §8
#   ./run.sh test   run the test suite (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_system_packages() {
  local need=()
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  command -v git >/dev/null 2>&1 || need+=(git)
  # WeasyPrint renders the PDF report with Pango; the tests turn its pages into PNG.
  ldconfig -p 2>/dev/null | grep -q 'libpango-1.0' || need+=(libpango-1.0-0 libpangoft2-1.0-0)
  ldconfig -p 2>/dev/null | grep -q 'libharfbuzz-subset' || need+=(libharfbuzz-subset0)
  fc-list 2>/dev/null | grep -qi dejavu || need+=(fonts-dejavu-core)
  command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
  if ((${#need[@]})); then
    say "installing system packages: ${need[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

setup() {
  command -v python3 >/dev/null 2>&1 || { echo "vtaudit needs python3 (3.11 or newer): apt-get install python3" >&2; exit 2; }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "vtaudit needs Python 3.11 or newer; found $(python3 --version)" >&2; exit 2; }
  install_system_packages
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    say "installing vtaudit and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch .venv/.installed
  fi
}

demo() {
  local out=demo-out/election
  rm -rf "$out" demo-out/evidence
  say "simulating a 2,000-voter election into $out"
  .venv/bin/vtaudit simulate --voters 2000 --seed 1 --out "$out"
  say "harvesting it into an evidence store (Parquet + DuckDB)"
  .venv/bin/vtaudit harvest "$out/evidence.car" --out demo-out/evidence --quiet
  say "verifying it: every check of spec §8, the recount and the runoff rules"
  .venv/bin/vtaudit verify demo-out/evidence --trust "$out/trust.toml"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo) setup; demo ;;
  test) setup; exec .venv/bin/python -m pytest -q "$@" ;;
  setup) setup ;;
  *) echo "usage: ./run.sh demo | test [pytest args] | setup" >&2; exit 2 ;;
esac
