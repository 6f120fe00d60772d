"""The exports manifest: every users export written, with its creation and expiry (24 h).

The manifest is `manifest.json` in the exports folder, beside the files it lists, so the
folder describes itself (`cat` it) and purging needs nothing else: not the warehouse, not
the state file a run may be holding. Writers take an flock on `.manifest.lock` and replace
the JSON atomically, so an export and a nightly purge running at once cannot lose entries.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
# How long an export is kept: then the next run (or export command) deletes it.
EXPORT_LIFETIME = timedelta(hours=24)
# Names of the files the export command writes in the exports folder, and its temporary
# folders; a purge also removes old ones the manifest does not list (a lost manifest).
EXPORT_GLOB = "users-*.csv"
TEMP_PREFIX = ".usercounts-export-"


@dataclass
class PurgeResult:
    """What a purge removed, and what it could not (reported, never fatal)."""

    deleted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def utc_now() -> datetime:
    return datetime.now(UTC)


def ensure_folder(folder: Path) -> None:
    """Create the exports folder readable by its owner only (an existing one is left as is)."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


@contextmanager
def locked_entries(folder: Path) -> Iterator[list[dict[str, Any]]]:
    """Yield the manifest's entries under an exclusive lock; changes are saved atomically."""
    ensure_folder(folder)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = folder / MANIFEST_NAME
        try:
            entries = read_entries(folder)
        except ValueError:
            # kept aside for a person to read; the files it listed are still swept by age
            os.replace(path, path.with_name(f"{MANIFEST_NAME}.unreadable"))
            entries = []
        yield entries
        tmp = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
        tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(tmp_fd, "w", encoding="utf-8") as fh:
            json.dump({"exports": entries}, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        os.close(fd)


def read_entries(folder: Path) -> list[dict[str, Any]]:
    """The manifest's entries (none when there is no manifest yet)."""
    path = folder / MANIFEST_NAME
    if not path.exists():
        return []
    try:
        entries = list(json.loads(path.read_text(encoding="utf-8"))["exports"])
        for entry in entries:  # every entry needs a path and a readable expiry
            if not isinstance(entry["path"], str):
                raise TypeError(f"path is not text: {entry['path']!r}")
            datetime.fromisoformat(entry["expires_at"])
        return entries
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a usercounts exports manifest: {exc}") from None


def file_identity(path: Path) -> dict[str, int]:
    """Size and modification time: a purge deletes a file outside the folder only if unchanged."""
    st = path.stat()
    return {"size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def purge_expired(folder: Path, now: datetime | None = None) -> PurgeResult:
    """Delete exports whose expiry has passed and drop them from the manifest.

    A file inside the exports folder is deleted. A file written elsewhere (`--out`) is
    deleted only if its size and modification time are still those recorded, so a file
    someone has since replaced is never removed.
    """
    now = now or utc_now()
    result = PurgeResult()
    if not folder.is_dir():
        return result
    folder = folder.resolve()
    with locked_entries(folder) as entries:
        keep = []
        for entry in entries:
            if datetime.fromisoformat(entry["expires_at"]) > now:
                keep.append(entry)
                continue
            _delete_export(folder, entry, result)
        entries[:] = keep
        listed = {Path(e["path"]) for e in keep}
    _sweep_unlisted(folder, listed, now, result)
    return result


def _delete_export(folder: Path, entry: dict[str, Any], result: PurgeResult) -> None:
    path = Path(entry["path"])
    try:
        if not path.exists():
            return
        inside = path.resolve().parent == folder
        recorded = {k: entry.get(k) for k in ("size_bytes", "mtime_ns")}
        if not inside and file_identity(path) != recorded:
            result.warnings.append(
                f"expired export {path} changed since it was written: not deleted"
            )
            return
        path.unlink()
        result.deleted.append(str(path))
    except OSError as exc:
        result.warnings.append(f"could not delete expired export {path}: {exc}")


def _sweep_unlisted(folder: Path, listed: set[Path], now: datetime, result: PurgeResult) -> None:
    """Remove export files and temporary folders older than the lifetime that nothing lists."""
    cutoff = (now - EXPORT_LIFETIME).timestamp()
    for path in [*folder.glob(EXPORT_GLOB), *folder.glob(f"{TEMP_PREFIX}*")]:
        try:
            if path in listed or path.stat().st_mtime > cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            result.deleted.append(str(path))
        except OSError as exc:
            result.warnings.append(f"could not delete old export {path}: {exc}")
