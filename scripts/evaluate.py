#!/usr/bin/env python3
"""Evaluate super-resolution results: same as the ``iter-sr-eval`` command (see ``--help``).

python scripts/evaluate.py --pred results/ITER --gt datasets/val_HR --pred_suffix _ITER --json metrics.json
"""

import sys
from pathlib import Path

try:
    from iter_diffusers.evaluation.cli import main
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from iter_diffusers.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
