"""Hugging Face Space entry point: the ITER web demo (``iter-sr-app``; see the README, "Web demo").

A Space holds this repository's files; ``src/`` is put on the path when the package is not installed.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("iter_diffusers") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from iter_diffusers.app.cli import main  # noqa: E402 (after the path is set)

if __name__ == "__main__":
    sys.exit(main())
