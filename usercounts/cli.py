"""The `usercounts` command line (data-contract section 5).

Each command imports what it needs when it runs: Prefect, dbt and Great Expectations each
cost seconds to import, and `usercounts counts` should answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

from pydantic import ValidationError

from usercounts.config import Settings, quiet_tool_defaults
from usercounts.lock import RunLocked, run_lock


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number >= 1: {text!r}")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the options given on the command line."""
    given = {
        name: getattr(args, name)
        for name in ("landing", "database", "outbox")
        if getattr(args, name, None) is not None
    }
    return Settings(**given)


def _invalid_settings(exc: ValidationError) -> str:
    """Pydantic's report on the settings as one line, naming each variable."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:  # a field: name its variable and what it was given
            name = f"USERCOUNTS_{str(error['loc'][0]).upper()}"
            message = f"{name}: {message} (got {error['input']!r})"
        problems.append(message)
    return "invalid settings: " + "; ".join(problems)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    # A stop request (systemd, `timeout`, a container stop) ends the run like Ctrl-C: the
    # dbt child and Prefect's temporary server are stopped instead of being left running.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = _settings(args)  # bad settings stop the run here, before Prefect starts
    with run_lock(settings.lock_path):
        pass  # another run holds it: say so now, not once Prefect's server is up (~20 s)
    from usercounts.build import start_dbt_child
    from usercounts.prefect_server import start_temporary_server

    # dbt's server imports dbt while this process imports; the flow gives the child it forks
    # the project to parse once it holds the run lock (build.prestart_dbt)
    start_dbt_child()

    # Without PREFECT_API_URL: Prefect's temporary server boots while the flow and Great
    # Expectations import (3-6 s), in a process that dies with this one.
    server = start_temporary_server()
    from usercounts.gc_tuning import batch_imports

    # frozen once imported: the flow's own tune_for_batch_run() is then a no-op
    with batch_imports():
        import great_expectations  # noqa: F401 - imported now, while the server boots

        from flows.nightly import nightly
        from usercounts.logs import console_without_tracebacks

    console_without_tracebacks()
    if server is not None:
        server.wait_until_ready()

    summary = nightly(
        landing=str(args.landing) if args.landing else None,
        database=str(args.database) if args.database else None,
        as_of=args.as_of,
        outbox=str(args.outbox) if args.outbox else None,
        full_refresh=args.full_refresh,
    )
    print(summary.to_text())
    return 0


def cmd_counts(args: argparse.Namespace) -> int:
    from usercounts.views import print_counts

    return print_counts(_settings(args).published_path, args.plan, months=args.months)


def cmd_notify_at_80(args: argparse.Namespace) -> int:
    from usercounts.state import set_notify_at_80
    from usercounts.views import open_published

    settings = _settings(args)
    enabled = args.setting == "on"
    set_notify_at_80(settings.state_path, args.plan, enabled)
    print(
        f"usercounts: 80% notifications for plan {args.plan} are {args.setting} "
        "(from the next run on)"
    )
    # kept either way (it works before the first run), but a mistyped id should show
    if settings.published_path.exists():
        with open_published(settings.published_path) as con:
            (known,) = con.execute(
                "select count(*) from marts.plan_user_counts_current where plan_id = ?",
                [args.plan],
            ).fetchone()
        if not known:
            print(
                f"usercounts: warning: no plan {args.plan!r} in {settings.published_path}: "
                "check the plan id (the setting is kept for when such a plan appears)",
                file=sys.stderr,
            )
    return 0


def cmd_notifications(args: argparse.Namespace) -> int:
    from usercounts.views import print_notifications

    return print_notifications(_settings(args).state_path, args.plan, args.all)


def cmd_notifications_cancel(args: argparse.Namespace) -> int:
    from usercounts.state import (
        NotificationNotFound,
        NotificationNotOwed,
        cancel_notification,
        id_prefix,
    )

    if args.plan or args.all:
        print("usercounts: error: cancel takes an id only, not --plan or --all", file=sys.stderr)
        return 2
    settings = _settings(args)
    try:
        if not settings.state_path.exists():  # say so, without creating the folder and files
            raise NotificationNotFound(
                f"no notifications yet ({settings.state_path} does not exist)"
            )
        prefix = id_prefix(args.notification_id)
        # a run's notify step may be retrying this very row: wait for no run, not a race
        with run_lock(settings.lock_path):
            row, changed = cancel_notification(settings.state_path, prefix)
    except (NotificationNotFound, NotificationNotOwed) as exc:
        print(f"usercounts: error: {exc}", file=sys.stderr)
        return 1
    what = f"{row.kind} notification for plan {row.plan_id} as of {row.as_of_date}"
    what += f" ({row.notification_id})"
    if not changed:
        print(f"usercounts: the {what} was already cancelled")
        return 0
    was = f"{row.status} after {row.attempts} attempt(s)" if row.attempts else "never attempted"
    print(
        f"usercounts: cancelled the {what}, {was}; "
        + (
            f"delivered to {row.delivered_to} only. "
            if row.delivered_to
            else "delivered to nobody. "
        )
        + "No run retries it, and it counts as sent for the 30-day and limit rules "
        "(marts.notifications shows it from the next run on)"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from usercounts.export import run_export

    if args.all_plans != bool(args.org) or (args.all_plans and args.out):
        print(
            "usercounts: error: use --plan PLAN_ID [--out FILE], or --all-plans --org ORG_ID",
            file=sys.stderr,
        )
        return 2
    return run_export(_settings(args), args.plan, org_id=args.org, out=args.out)


def cmd_inactive(args: argparse.Namespace) -> int:
    from usercounts.inactive import print_inactive

    settings = _settings(args)
    days = args.days if args.days is not None else settings.inactive_days
    return print_inactive(settings.published_path, args.plan, days, limit=args.limit)


def cmd_report(args: argparse.Namespace) -> int:
    from usercounts.report import write_report

    settings = _settings(args)
    files = write_report(settings.published_path, args.out or settings.reports_path)
    print(
        f"usercounts: capacity report as of {files.as_of.isoformat()}, {files.plans} plans: "
        f"{files.latest_html} (dated copy {files.html.name}; CSV "
        + ", ".join(p.name for p in files.csv)
        + ")"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from usercounts.generate import check_arguments, generate, generate_demo

    try:
        check_arguments(months=args.months, daily_files=args.daily_files)
    except ValueError as exc:
        print(f"usercounts: error: {exc}", file=sys.stderr)
        return 2
    if args.demo:
        written = generate_demo(args.out)
    else:
        written = generate(
            args.out,
            users=args.users,
            seed=args.seed,
            fmt=args.format,
            months=args.months,
            daily_files=args.daily_files,
        )
    total = sum(written.values())
    print(
        f"usercounts: wrote {total} rows to {args.out}: "
        + ", ".join(f"{source} {rows}" for source, rows in written.items())
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from usercounts.schedule import serve

    serve(_settings(args), cron=args.cron)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each sub-command names the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="usercounts",
        description="User counts per subscription plan: history, notifications, exports.",
    )
    # the installed package's version, for a bug report or to tell two installs apart
    parser.add_argument(
        "--version", action="version", version=f"usercounts {version('usercounts')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def database_option(p: argparse.ArgumentParser, default: object = None) -> None:
        p.add_argument(
            "--database",
            type=Path,
            default=default,
            help="the published warehouse file (default: USERCOUNTS_DATABASE, else the "
            "project's data/warehouse.duckdb)",
        )

    run = sub.add_parser("run", help="the nightly job: load, build, check, notify, publish")
    run.add_argument("--landing", type=Path, help="landing folder (default: bundled demo data)")
    database_option(run)
    run.add_argument("--as-of", type=_date, help="as-of date D, YYYY-MM-DD (default: today UTC)")
    run.add_argument("--outbox", type=Path, help="folder for .eml files when SMTP is not set")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the working database from the landing folder instead of adding to it",
    )
    run.set_defaults(func=cmd_run)

    counts = sub.add_parser("counts", help="the 12-month view per plan")
    counts.add_argument("--plan", help="only this plan_id")
    counts.add_argument("--months", type=_positive, default=12, help="how many months (default 12)")
    database_option(counts)
    counts.set_defaults(func=cmd_counts)

    notify = sub.add_parser("notify-at-80", help="turn the 80%% notification on or off")
    notify.add_argument("setting", choices=["on", "off"])
    notify.add_argument("--plan", required=True, help="the plan_id")
    database_option(notify)
    notify.set_defaults(func=cmd_notify_at_80)

    notifications = sub.add_parser(
        "notifications",
        help="the owed notifications (pending or failed); cancel one",
        usage="usercounts notifications [--plan PLAN] [--all] [--database DATABASE]\n"
        "       usercounts notifications cancel ID [--database DATABASE]",
    )
    notifications.add_argument("--plan", help="only this plan_id")
    notifications.add_argument(
        "--all", action="store_true", help="every notification decided, not only the owed ones"
    )
    database_option(notifications)
    notifications.set_defaults(func=cmd_notifications)
    actions = notifications.add_subparsers(
        title="actions", metavar="ACTION", prog="usercounts notifications"
    )
    cancel = actions.add_parser(
        "cancel", help="stop retrying an owed notification for good (no run may be going)"
    )
    cancel.add_argument(
        "notification_id", metavar="ID", help="its id, or the first 6 or more characters of it"
    )
    # SUPPRESS: a --database given before `cancel` is not reset by this parser's default
    database_option(cancel, default=argparse.SUPPRESS)
    cancel.set_defaults(func=cmd_notifications_cancel)

    export = sub.add_parser("export", help="the users export of a plan (CSV, expires in 24 h)")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--plan", help="the plan_id to export")
    which.add_argument(
        "--all-plans", action="store_true", help="every exportable plan of --org, one file each"
    )
    export.add_argument("--org", help="the org_id, with --all-plans")
    export.add_argument("--out", type=Path, help="write here instead of the exports folder")
    database_option(export)
    export.set_defaults(func=cmd_export)

    inactive = sub.add_parser("inactive", help="whom to remove first: inactive users of a plan")
    inactive.add_argument("--plan", required=True, help="the plan_id")
    inactive.add_argument(
        "--days", type=_positive, help="inactive N days or more (default: USERCOUNTS_INACTIVE_DAYS)"
    )
    inactive.add_argument("--limit", type=_positive, help="show the first N only (default: all)")
    database_option(inactive)
    inactive.set_defaults(func=cmd_inactive)
    report = sub.add_parser("report", help="the capacity report: HTML and CSV (finance)")
    report.add_argument("--out", type=Path, help="folder to write (default: reports/ beside it)")
    database_option(report)
    report.set_defaults(func=cmd_report)

    gen = sub.add_parser("generate", help="write a synthetic landing folder")
    gen.add_argument(
        "--out",
        type=Path,
        required=True,
        help="landing folder to write (files already there stay: start from an empty one)",
    )
    gen.add_argument("--users", type=_positive, default=1000, help="how many users (default 1000)")
    gen.add_argument("--seed", type=int, default=42, help="same seed, same files (default 42)")
    gen.add_argument("--months", type=_positive, default=24, help="months of history (default 24)")
    gen.add_argument(
        "--format", choices=["csv", "parquet"], default="parquet", help="(default parquet)"
    )
    gen.add_argument(
        "--daily-files",
        type=int,
        default=0,
        metavar="N",
        help="write the last N days of events and last-seen as one file per day",
    )
    gen.add_argument("--demo", action="store_true", help="the small bundled demo data set")
    gen.set_defaults(func=cmd_generate)

    serve = sub.add_parser("serve", help="run the nightly flow on a schedule (Prefect)")
    serve.add_argument("--cron", help="cron schedule (default: USERCOUNTS_SCHEDULE_CRON)")
    database_option(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command; report expected failures as one line, exit non-zero."""
    import duckdb

    from usercounts.errors import RunFailed, UsageError

    quiet_tool_defaults()
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader gone away shows here, inside the try, not at exit
        return code
    except BrokenPipeError:
        # `usercounts counts | head`: the reader has what it wanted; stop without a traceback
        # (Python's own advice: point stdout at devnull so that its flush at exit is quiet)
        with contextlib.suppress(OSError, ValueError):  # stdout may not be a file at all
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 1
    # OSError and DuckDB's I/O and fatal errors: the disk, not the code (a full disk, a
    # file that cannot be written), so one line too
    except (
        RunFailed,
        RunLocked,
        UsageError,
        OSError,
        duckdb.IOException,
        duckdb.FatalException,
    ) as exc:
        print(f"usercounts: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"usercounts: error: {_invalid_settings(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("usercounts: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
