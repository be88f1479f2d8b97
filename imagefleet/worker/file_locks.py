"""Advisory file locks (flock) that work the same between threads and between processes.

Several worker processes on one node may share a model cache directory. A flock belongs to an
open file description, so two ``open()`` calls conflict even inside one process: the same lock
serialises two threads of one worker and two workers alike, and the kernel drops it when a
process dies, so a killed worker never leaves a cache locked.

Lock files are created once and never deleted: deleting one while another process holds or
awaits it would let a third process lock a fresh file of the same name at the same time.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FileLock:
    """One lock file; ``shared`` or ``exclusive``, blocking or not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, exclusive: bool, blocking: bool = True) -> bool:
        """Takes the lock; without blocking, returns False at once if another holder conflicts."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FileLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if not blocking:
            flags |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


@contextmanager
def locked(path: Path, *, exclusive: bool = True) -> Iterator[None]:
    """Holds the lock at ``path`` (blocking) for the duration of the block."""
    lock = FileLock(path)
    lock.acquire(exclusive=exclusive)
    try:
        yield
    finally:
        lock.release()
