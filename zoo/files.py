"""Atomic file writes: every file glrzoo rewrites in place (metadata, indexes, reports, run logs)
goes through :func:`write_text_atomic`, so a reader, or a run killed mid-write, sees the old file
or the new one, never half of one."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (same file system)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, value, **dumps) -> Path:
    """:func:`write_text_atomic` of ``json.dumps(value, **dumps)`` (default: indent 1, sorted keys);
    the parent folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(value, **(dumps or {"indent": 1, "sort_keys": True})))


__all__ = ["write_json", "write_text_atomic"]
