"""Files under the data dir: private (0600 files in 0700 directories) and locked by one server.

Every piece that writes into the data dir (ledger, snapshots, budget journal, keys, resource log,
usage-index snapshots) makes its directories with :func:`private_dir` and its files with
:func:`private_open` / :func:`private_file`, so spend, keys and budgets are readable by the
server's own user only, whatever the umask. :class:`DataDirLock` keeps a second server off a data
dir that one already serves.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "LOCK_FILE",
    "DataDirLock",
    "DataDirLockedError",
    "open_to_others",
    "private_dir",
    "private_file",
    "private_open",
]

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
LOCK_FILE: Final = "costspan.lock"


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Make ``path`` a directory only its owner can enter (missing parents too).

    An existing ``path`` is tightened to 0700 with ``tighten`` (the data dir's own subdirectories);
    the data dir itself is not (``--data-dir .`` must not lock others out of a project directory):
    see :func:`open_to_others`.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if tighten and path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def open_to_others(path: Path) -> int:
    """The group and other permission bits of ``path`` (0: only its owner may enter it)."""
    return path.stat().st_mode & 0o077


def private_open(path: Path, flags: int) -> int:
    """``os.open`` that creates ``path`` as 0600 (``O_CREAT`` is added)."""
    return os.open(path, flags | os.O_CREAT, FILE_MODE)


def private_file(path: Path, mode: Literal["wb", "w", "ab", "a"]) -> IO[Any]:
    """``open(path, mode)`` for writing (``w`` truncates, ``a`` appends), creating the file as 0600."""
    flags = os.O_WRONLY | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = private_open(path, flags)
    if mode.endswith("b"):
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8")


class DataDirLockedError(RuntimeError):
    """Another process holds the data dir's lock."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/costspan.lock``, held until :meth:`release` (or the
    process ends: the kernel drops the lock with the file descriptor, even after ``kill -9``).

    ``with DataDirLock(data_dir): ...`` raises :class:`DataDirLockedError` when another process
    serves the dir. The file holds the holder's pid, for the error message only.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        private_dir(self.path.parent, tighten=False)
        fd = private_open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise DataDirLockedError(
                f"data dir {self.path.parent} is in use by another costspan serve (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Safe twice. The lock file stays (removing it would race a starting server)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
