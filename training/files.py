"""Small file helpers shared by the training loop and its callbacks."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, value) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a temporary sibling, then a rename), so a
    reader (a resumed run) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)
