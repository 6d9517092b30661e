"""Small file-system helpers shared by the code that writes model and adapter folders."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or new entry in `folder` durable; a file's own fsync does not cover it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
