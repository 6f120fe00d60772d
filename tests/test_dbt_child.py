"""dbt's child parses the project while the run loads (usercounts.build.prestart_dbt).

The nightly flow starts dbt's child before the load step (`usercounts run` starts it
earlier, build.start_dbt_child) and has it parse the project then; the build uses that
parse only when it was made for the same working database, environment and project
files. What it saves is measured by the benchmark
(BENCHMARKS.md), not here; the flow's own use of it is checked in tests/test_report.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from conftest import (
    SHARED_PARSE,
    Landing,
    canonical_dump,
    copy_project,
    ppid_and_state,
    query,
    run_in_project,
    settings_for,
    wait_until,
)
from test_incremental import D1, D2, night_1

from usercounts import pipeline, workdb
from usercounts.build import (
    dbt_home,
    dbt_target,
    prestart_dbt,
    run_dbt,
    start_dbt_child,
)
from usercounts.dbt_child import PARSED_IN_ADVANCE
from usercounts.errors import RunFailed


@pytest.fixture
def parse_kept_in_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a run keeps it: in the target folder of its working database. conftest shares one
    parse between the tests' folders, which the other tests here keep: whether a parse in
    advance serves the build does not depend on where dbt reads its last parse from, and a
    new folder's own parse is from scratch (~4 s against ~0.7 s)."""
    monkeypatch.delenv(SHARED_PARSE, raising=False)


def dbt_log_counts(work_path: Path) -> dict[str, int]:
    """How many times dbt ran in this folder, and how many of those parsed the project
    (dbt 1.11 logs the checksum of its parse state, at debug level, whenever it parses)."""
    log = (dbt_home(work_path) / "logs" / "dbt.log").read_text(encoding="utf-8")
    return {
        "invocations": log.count("Running with dbt="),
        "parses": len(re.findall(r"\]: checksum: [0-9a-f]+, vars:", log)),
    }


@pytest.mark.usefixtures("parse_kept_in_the_data_folder")
def test_a_build_on_the_parse_made_during_the_load_equals_one_that_parses(
    landing: Landing, tmp_path: Path
) -> None:
    night_1(landing)
    settings = settings_for(tmp_path / "advance", landing.root)
    # dbt's last step of a parse; its first run in this folder has none to read
    partial_parse = dbt_target(settings.work_path) / "partial_parse.msgpack"
    # The parse opens no database: it finishes while another connection writes the
    # working database, as the load's does.
    settings.work_path.parent.mkdir(parents=True)
    with workdb.connect(settings.work_path):
        prestart_dbt(settings.work_path, D1, settings.inactive_days)
        wait_until(partial_parse.exists, 120, f"{partial_parse} from the parse in advance")
    advance = pipeline.load_build_publish(settings, D1)
    assert advance.dbt_parsed_in_advance
    assert dbt_log_counts(settings.work_path) == {"invocations": 2, "parses": 1}

    parsing = settings_for(tmp_path / "parsing", landing.root)
    plain = pipeline.load_build_publish(parsing, D1)
    assert not plain.dbt_parsed_in_advance
    assert dbt_log_counts(parsing.work_path) == {"invocations": 1, "parses": 1}
    dump = canonical_dump(settings.published_path)
    assert dump["marts.plan_user_counts_monthly"]  # something was built to compare
    assert dump == canonical_dump(parsing.published_path)


@pytest.mark.usefixtures("parse_kept_in_the_data_folder")
def test_a_data_folder_moved_elsewhere_keeps_dbt_s_parse(tmp_path: Path) -> None:
    """dbt runs in the working database's folder and the profile names the working files
    relative to it: dbt 1.11 parses from scratch when a profile value changes, and an
    absolute path would change with the folder."""
    before = tmp_path / "before" / ".warehouse.work.duckdb"
    run_dbt("parse", before, D1)
    after = tmp_path / "moved" / "elsewhere" / before.name
    after.parent.parent.mkdir()
    before.parent.rename(after.parent)
    run_dbt("parse", after, D1)
    log = (dbt_home(after) / "logs" / "dbt.log").read_text(encoding="utf-8")
    last_run = log.rsplit("Running with dbt=", 1)[1]
    assert "Unable to do partial parsing" not in last_run
    assert "Partial parsing enabled" in last_run


def test_a_parse_made_for_another_run_is_not_used(landing: Landing, tmp_path: Path) -> None:
    night_1(landing)
    settings = settings_for(tmp_path / "home", landing.root)
    prestart_dbt(settings.work_path, D2, settings.inactive_days)  # another as-of date
    summary = pipeline.load_build_publish(settings, D1)
    assert not summary.dbt_parsed_in_advance
    assert query(settings.published_path, "select max(day) from marts.plan_user_counts_daily") == [
        (D1,)
    ]


def test_the_child_started_before_the_flow_parses_and_builds(
    landing: Landing, tmp_path: Path
) -> None:
    """`usercounts run` starts dbt's child before it imports the flow; the flow's prestart
    then gives that child the parse instead of starting another."""
    night_1(landing)
    settings = settings_for(tmp_path / "home", landing.root)
    # a run that failed before its build left a child parsed for it: not the one to use
    left = prestart_dbt(settings.work_path, D2, settings.inactive_days)
    child = start_dbt_child()
    assert child is not left
    assert prestart_dbt(settings.work_path, D1, settings.inactive_days) is child
    summary = pipeline.load_build_publish(settings, D1)
    assert summary.dbt_parsed_in_advance
    assert child.returncode == 0  # it ran the build (a discarded child is killed)


def test_a_child_parsed_for_an_earlier_run_is_stopped_and_replaced(
    landing: Landing, tmp_path: Path
) -> None:
    night_1(landing)
    settings = settings_for(tmp_path / "home", landing.root)
    # a run that failed before its build left this one, parsed for its own as-of date
    left = prestart_dbt(settings.work_path, D2, settings.inactive_days)
    child = prestart_dbt(settings.work_path, D1, settings.inactive_days)
    assert child is not left
    # killed (after it said its pid) before it said an exit code (its socket closes a
    # moment before the kernel shows it ended)
    assert left.pid is not None and left.returncode is None
    wait_until(lambda: not running(left.pid), 10, "the killed child to end")
    summary = pipeline.load_build_publish(settings, D1)
    assert summary.dbt_parsed_in_advance
    assert child.returncode == 0


def test_a_failing_build_on_the_parse_in_advance_reports_dbt_s_own_error(
    landing: Landing, tmp_path: Path
) -> None:
    night_1(landing)
    settings = settings_for(tmp_path / "home", landing.root)
    pipeline.load(settings)
    # another program holds the working marts file: dbt cannot attach it
    with duckdb.connect(str(workdb.marts_path(settings.work_path))):
        prestart_dbt(settings.work_path, D1, settings.inactive_days)
        with pytest.raises(RunFailed, match="^dbt build failed") as failed:
            pipeline.build(settings, D1)
    assert PARSED_IN_ADVANCE not in str(failed.value)
    assert "lock" in str(failed.value).lower()


def running(pid: int) -> bool:
    """Whether the process runs; not once it is a zombie or exiting."""
    info = ppid_and_state(pid)
    return info is not None and info[1] not in ("Z", "X", "x")


# A run's data steps in a new process, on a copy of the project: dbt's child parses in
# advance, and a model is edited (or not) once that parse is written.
EDIT_AFTER_THE_PARSE = """
import sys
import time
from datetime import date
from pathlib import Path

from usercounts import pipeline
from usercounts.build import dbt_target, prestart_dbt
from usercounts.config import PROJECT_ROOT, Settings

settings = Settings(landing=Path(sys.argv[1]), database=Path(sys.argv[2]))
as_of = date.fromisoformat(sys.argv[3])
prestart_dbt(settings.work_path, as_of, settings.inactive_days)
partial_parse = dbt_target(settings.work_path) / "partial_parse.msgpack"
while not partial_parse.exists():
    time.sleep(0.1)
if sys.argv[4] == "edit":
    model = PROJECT_ROOT / "models" / "marts" / "plan_instances.sql"
    model.write_text(model.read_text() + "\\n-- edited after the parse in advance\\n")
print(pipeline.load_build_publish(settings, as_of).dbt_parsed_in_advance)
"""


def test_a_model_edited_after_the_parse_in_advance_is_parsed_again(
    landing: Landing, tmp_path: Path
) -> None:
    project = copy_project(tmp_path / "project")
    night_1(landing)

    def run(home: str, edit: str) -> tuple[str, str]:
        database = tmp_path / home / "warehouse.duckdb"
        out = run_in_project(
            project, EDIT_AFTER_THE_PARSE, str(landing.root), str(database), D1.isoformat(), edit
        )
        compiled = dbt_target(database.with_name(".warehouse.work.duckdb")) / "compiled"
        built = (compiled / "usercounts/models/marts/plan_instances.sql").read_text()
        return out.strip().splitlines()[-1], built

    parsed_in_advance, built = run("unedited", "no edit")
    assert parsed_in_advance == "True"
    parsed_in_advance, built = run("edited", "edit")
    assert parsed_in_advance == "False"
    assert "-- edited after the parse in advance" in built
