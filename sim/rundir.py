"""Run directories: where a run may be written, and writing it whole or not at all.

A run is written into a temporary sibling folder (``.NAME.tmp-XXXX``) and renamed to its name
only when every file is complete, so a crash or a kill leaves either the previous state or the
whole new run, never a half-written one. ``sim run --out DIR`` never mixes two runs: a folder
that holds a run or a study is refused, or replaced whole with ``--force``; a folder that holds
anything else is always refused (``--force`` deletes only what this program wrote).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sim.errors import UserError

# files that mark a folder as written by this program: a run, or a sweep / plan folder
RUN_MARKERS = ("run.json", "scenario.json", "requests.parquet", "steps.parquet", "summary.json")
STUDY_MARKERS = ("sweep.json", "plan.csv", "points")


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder to write into: UserError when it exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: is a file, not a folder; give a folder to write into")
    return path


def holds_run(path: Path) -> bool:
    """Whether folder `path` holds (part of) a run written by this program."""
    return any((path / name).exists() for name in RUN_MARKERS)


def holds_study(path: Path) -> bool:
    """Whether folder `path` holds a sweep or a plan."""
    return any((path / name).exists() for name in STUDY_MARKERS)


def check_run_out(out: str | Path, force: bool = False) -> Path:
    """Where a new run may go, checked before simulating (UserError otherwise).

    A missing or empty folder is fine; one holding a run or a study needs `force` (it will be
    replaced whole); one holding anything else is refused.
    """
    out = check_out_dir(out)
    if not out.exists() or not any(out.iterdir()):
        return out
    what = "a run" if holds_run(out) else "a sweep or plan" if holds_study(out) else None
    if what is None:
        raise UserError(
            f"--out {out}: the folder is not empty and holds no run; choose a new folder "
            f"(--force replaces only a folder that holds a run)"
        )
    if not force:
        raise UserError(
            f"--out {out}: already holds {what}; use --force to replace it whole, or another --out"
        )
    return out


def check_study_out(out: str | Path) -> Path:
    """Where a sweep or plan may go: not a file, and not a folder holding a single run (its
    points would mix with that run's files). A folder of the same study is resumed."""
    out = check_out_dir(out)
    if out.is_dir() and holds_run(out):
        raise UserError(f"--out {out}: holds a run, not a sweep or plan; choose another folder")
    return out


def temporary_sibling(final: Path) -> Path:
    """A fresh hidden name beside `final` to write it under (``.NAME.tmp-<12 hex digits>``)."""
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")


@contextmanager
def writing_run(out: str | Path) -> Iterator[Path]:
    """A temporary sibling of `out` to write a run into, put in place of `out` (replacing it
    whole) when the block succeeds and removed when it raises."""
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(new: Path, final: Path) -> None:
    """Rename folder `new` to `final`; a folder already at `final` is moved aside first, then
    deleted, so `final` always holds one whole version."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
