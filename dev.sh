#!/usr/bin/env bash
# The project's set-up and everyday commands. Each bootstraps .venv/ from nothing first.
#   ./dev.sh run [usercounts run options]   the nightly job on the embedded default
#   ./dev.sh test [pytest options]          lint + the test suite (what CI runs)
#   ./dev.sh lint                           ruff + sqlfluff only
#   ./dev.sh lock                           re-resolve requirements.lock from pyproject.toml
#   ./dev.sh bench [bench options]          the scale benchmark (bench/run_bench.py; figures only)
#   ./dev.sh usercounts ARGS...             any usercounts command
set -euo pipefail
cd "$(dirname "$0")"

UV_VERSION=0.13.8

python_311() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"
      return
    fi
  done
  echo "usercounts needs Python 3.11 (python3.11 or python3 on PATH)" >&2
  exit 1
}

bootstrap() {
  if [ ! -x .venv/bin/python ]; then
    "$(python_311)" -m venv .venv
  fi
  # Reinstall only when the pinned requirements change.
  local stamp
  stamp=".venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet "uv==${UV_VERSION}"
    # Bytecode now: without it every dbt, Prefect and GX import compiles again (PYTHONDONTWRITEBYTECODE).
    .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python -r requirements.lock
    .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}

lint() {
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  # The dbt templater connects to a database, and is_incremental() decides which branch of
  # an incremental model it lints. Twice, on scratch databases, so that the result does not
  # depend on (and never locks) a working database a run left in data/: empty (the full
  # build's branches), then after a build of the demo data (the is_incremental() branches,
  # and with USERCOUNTS_LINT_LAST_BUILD the parts that read that build through
  # previous_build(), which otherwise reads it only under `dbt build`/`dbt run`).
  local scratch status=0
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  lint_models "$scratch" || status=$?
  rm -rf "$scratch"
  trap - EXIT
  return "$status"
}

lint_models() {
  USERCOUNTS_WORK_DB="$1/empty.duckdb" USERCOUNTS_WORK_MARTS_DB="$1/empty.marts.duckdb" \
    .venv/bin/sqlfluff lint models --disable-progress-bar --nocolor &&
    .venv/bin/python - "$1/built" <<'PY' &&
import sys
from pathlib import Path

from usercounts import pipeline
from usercounts.config import DEMO_LANDING, Settings, today_utc

# The demo data whatever USERCOUNTS_LANDING says: the lint must not depend on the shell.
settings = Settings(landing=DEMO_LANDING, database=Path(sys.argv[1]) / "warehouse.duckdb")
pipeline.load(settings)
pipeline.build(settings, today_utc())
PY
    # (an as-of date from the shell, earlier than the build's, would make previous_build() fail)
    USERCOUNTS_WORK_DB="$1/built/.warehouse.work.duckdb" \
      USERCOUNTS_WORK_MARTS_DB="$1/built/.warehouse.work.marts.duckdb" \
      USERCOUNTS_LINT_LAST_BUILD=1 env -u USERCOUNTS_AS_OF_DATE \
      .venv/bin/sqlfluff lint models --disable-progress-bar --nocolor
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  run)
    bootstrap
    exec .venv/bin/usercounts run "$@"
    ;;
  test)
    bootstrap
    lint
    exec .venv/bin/pytest "$@"
    ;;
  lint)
    bootstrap
    lint
    ;;
  lock)
    bootstrap
    exec .venv/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
      -o requirements.lock
    ;;
  bench)
    bootstrap
    PYTHONPATH="$PWD" exec .venv/bin/python bench/run_bench.py "$@"
    ;;
  usercounts)
    bootstrap
    exec .venv/bin/usercounts "$@"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
