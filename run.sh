#!/usr/bin/env bash
# vtaudit developer entry point: set-up on a fresh Debian machine, the demo, the tests.
#   ./run.sh demo   simulate a small election, then audit it: every check of spec §8, signed reports
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
  rm -rf "$out" demo-out/evidence demo-out/audit
  say "simulating a 2,000-voter election into $out"
  .venv/bin/vtaudit simulate --voters 2000 --seed 1 --out "$out"
  if [ ! -f demo-out/keys/auditor.key ]; then
    say "creating the demo auditor's signing keys in demo-out/keys"
    .venv/bin/vtaudit keygen --out demo-out/keys --name "vtaudit demo auditor" >/dev/null
  fi
  say "auditing it: harvest, every check of spec §8, the recount, the runoff rules, signed reports"
  local status=0
  .venv/bin/vtaudit audit "$out/evidence.car" --trust "$out/trust.toml" --keys demo-out/keys \
    --out demo-out/audit || status=$?
  say "checking the signed reports as a reader would"
  .venv/bin/vtaudit report verify demo-out/audit/report.pdf --key demo-out/keys/auditor.pub \
    --cert demo-out/keys/pdf.crt
  say "open demo-out/audit/report.pdf (or report.html); the JSON is demo-out/audit/report.json"
  return "$status"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo) setup; demo ;;
  test) setup; exec .venv/bin/python -m pytest -q "$@" ;;
  setup) setup ;;
  *) echo "usage: ./run.sh demo | test [pytest args] | setup" >&2; exit 2 ;;
esac
