"""Which code produced a run: the git commit when run from a checkout, else the version."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import sevlm


@lru_cache(maxsize=1)
def code_version() -> str:
    root = Path(sevlm.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return f"{sevlm.__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return sevlm.__version__
