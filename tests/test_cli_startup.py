"""``iter-sr --help`` and usage errors answer without importing torch or diffusers (they take seconds to import).

Speed is not asserted (it depends on the machine); what makes it slow is: the heavy modules must stay unloaded.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers")

_PROBE = """
import contextlib, io, sys
from iter_diffusers.cli.upscale import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    codes = [main(argv) for argv in {argvs!r}]
print(codes, [name for name in {heavy!r} if name in sys.modules])
"""


def _probe(argvs: list[list[str]]) -> str:
    code = _PROBE.format(argvs=argvs, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_help_and_usage_errors_import_neither_torch_nor_diffusers():
    usage_errors = [["-o", "out"], ["-i", "x.png"], ["-i", "x.png", "-o", "out", "--ext", "gif"],
                    ["-i", "x.png", "-o", "out", "--no_such_option"],
                    # refused by the pipeline's own checks, which load no torch
                    ["-i", "x.png", "-o", "out", "--alpha", "2"], ["-i", "x.png", "-o", "out", "--steps", "0"],
                    ["-i", "x.png", "-o", "out", "--color_fix", "sharp"]]
    assert _probe([["--help"], *usage_errors]) == f"{[0] + [2] * len(usage_errors)} []"


def test_package_import_is_lazy_but_complete():
    code = ("import sys, iter_diffusers; heavy = [n for n in %r if n in sys.modules]; "
            "from iter_diffusers import *; print(heavy, iter_diffusers.ITERPipeline.__name__)") % (HEAVY,)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] ITERPipeline"


def test_console_script_help():
    proc = subprocess.run(["iter-sr", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: iter-sr" in proc.stdout
