"""Small file helpers shared by the training loop and its callbacks."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from zoo.errors import OutputExistsError
from zoo.files import write_json  # noqa: F401  (re-exported: the run log and checkpoints write through it)


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold an exclusive lock on the output folder ``out`` for the block, so that a second command
    writing to the same folder is refused in one line instead of racing the first (the lock is an
    advisory ``flock`` on the hidden sibling ``.<name>.lock``, released when the process dies)."""
    out = Path(out)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputExistsError(f"{out} is in use by another glrzoo command (pid {holder}); wait for it to "
                                    "finish or choose another --out (nothing was changed)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
        with contextlib.suppress(OSError):
            if not _locked(path):
                path.unlink()
            if not out.exists():  # the command failed: remove the folders it made for the lock
                for folder in made:
                    folder.rmdir()


def _locked(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
