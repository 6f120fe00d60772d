"""Settings: one pydantic-settings class, read from USERCOUNTS_* environment variables."""

from __future__ import annotations

import os
import shlex
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repo root: the dbt project, bundled demo data and the default data folder live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_LANDING = PROJECT_ROOT / "demo" / "landing"

# Landing sub-folders, in load order (data-contract section 1).
SOURCES: tuple[str, ...] = (
    "plans",
    "instances",
    "users",
    "org_admins",
    "access_events",
    "last_seen",
)


class Settings(BaseSettings):
    """Where the job reads, writes and sends; every field can be set as USERCOUNTS_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="USERCOUNTS_", extra="ignore")

    landing: Path = DEMO_LANDING
    data_dir: Path = PROJECT_ROOT / "data"
    # The published warehouse analysts open read-only; default: <data_dir>/warehouse.duckdb.
    database: Path | None = None
    outbox: Path | None = None
    exports_dir: Path | None = None
    inactive_days: int = Field(default=90, ge=1)
    # A source with a larger share of quarantined rows fails the run (critical check).
    quarantine_max_share: float = Field(default=0.05, ge=0, le=1)
    schedule_cron: str = "0 2 * * *"
    schedule_timezone: str = "UTC"
    # DuckDB's memory limit in dbt's builds (profiles.yml reads the variable itself; it is
    # a field so that a bad value stops the run at once, named, not in the middle of dbt).
    duckdb_memory_limit: str | None = None

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    # A file holding the password (owner-only mode), as an alternative to the variable.
    smtp_password_file: Path | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "usercounts@localhost"
    # The notify step's retries within a run (backoff: delay, 2 x delay, 4 x delay, ...);
    # what still fails is retried by the next run.
    notify_retries: int = Field(default=3, ge=0)
    notify_retry_delay_seconds: float = Field(default=30.0, ge=0)

    @field_validator(
        "landing", "data_dir", "database", "outbox", "exports_dir", "smtp_password_file"
    )
    @classmethod
    def _from_the_current_folder(cls, path: Path | None) -> Path | None:
        """A relative path is the current folder's, made absolute now: dbt and Great
        Expectations run in the project folder, where it would name another file."""
        return None if path is None else path.expanduser().absolute()  # `..` kept: symlinks

    @field_validator("schedule_timezone")
    @classmethod
    def _known_time_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(name)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError("not a time zone name (e.g. UTC, Europe/Berlin)") from None
        return name

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_limit_duckdb_reads(cls, limit: str | None) -> str | None:
        if limit is None or not limit.strip():
            return None  # unset: half the machine's memory (build.py)
        import duckdb

        try:
            duckdb.connect(config={"memory_limit": limit}).close()
        except duckdb.Error:
            raise ValueError("not a DuckDB memory limit (e.g. 12GB, 4GiB, 80%)") from None
        return limit

    @property
    def published_path(self) -> Path:
        """The published warehouse file."""
        return self.database or self.data_dir / "warehouse.duckdb"

    def database_option(self) -> str:
        """` --database FILE` for a command line that must reach this warehouse, or "" when
        it is the commands' default (as USERCOUNTS_DATABASE may be unset where it is typed)."""
        # model_construct: the fields' defaults, without reading the environment
        if self.published_path == type(self).model_construct().published_path:
            return ""
        return f" --database {shlex.quote(str(self.published_path))}"

    @property
    def home(self) -> Path:
        """The folder beside the published file that holds work, state and lock files."""
        return self.published_path.parent

    @property
    def stem(self) -> str:
        return self.published_path.stem

    @property
    def work_path(self) -> Path:
        """The working database the run builds in; never opened by analysts."""
        return self.home / f".{self.stem}.work.duckdb"

    @property
    def state_path(self) -> Path:
        """State that outlives rebuilds: settings and the notification log."""
        return self.home / f"{self.stem}.state.duckdb"

    @property
    def lock_path(self) -> Path:
        return self.home / f".{self.stem}.lock"

    @property
    def outbox_path(self) -> Path:
        return self.outbox or self.home / "outbox"

    @property
    def exports_path(self) -> Path:
        return self.exports_dir or self.home / "exports"

    @property
    def reports_path(self) -> Path:
        return self.home / "reports"

    @property
    def quality_path(self) -> Path:
        """Great Expectations' validation results and HTML data docs (quality/docs/index.html)."""
        return self.home / "quality"

    @model_validator(mode="after")
    def _working_database_name_is_free(self) -> Settings:
        """Refuse a warehouse file name that would make the working database's DuckDB name
        one of the names the run attaches its other files under (workdb.py, state.py)."""
        from usercounts.state import STATE_ALIAS
        from usercounts.workdb import MARTS_ALIAS

        # DuckDB names a database after its file name up to the first dot, leading dots
        # skipped, and compares names case-insensitively.
        name = self.work_path.name.lstrip(".").split(".")[0]
        if name.lower() in (MARTS_ALIAS, STATE_ALIAS):
            raise ValueError(
                f"the warehouse file name {self.published_path.name!r} (--database or "
                f"USERCOUNTS_DATABASE) cannot be used: DuckDB "
                f"would name its working database {name!r}, a name the run gives one of its "
                "own files; choose another file name"
            )
        return self


def as_of_instant(as_of: date) -> datetime:
    """The as-of instant A = D + 1 day at 00:00 UTC (data-contract section 2)."""
    return datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)


def today_utc() -> date:
    return datetime.now(UTC).date()


def quiet_tool_defaults() -> None:
    """No telemetry from dbt or Prefect: this machine has no internet and each attempt costs."""
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
