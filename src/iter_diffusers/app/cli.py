"""``iter-sr-app``: serve the ITER web demo (gradio), by default on http://127.0.0.1:7860, with no download.

Offline by design: gradio's analytics are off, no share link is made, and the page loads nothing but its own
server (gradio's fonts are served locally); only choosing the official weights downloads something (them, once).
On a Hugging Face Space, gradio's GRADIO_SERVER_NAME and GRADIO_SERVER_PORT variables set the defaults of --host
and --port.

Entry point (console script): ``iter-sr-app = iter_diffusers.app.cli:main``; the repository's ``app.py`` runs it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

from .uploads import MAX_INPUT_PIXELS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iter-sr-app",
        description="Serve the ITER web demo (gradio) on HOST:PORT, with the bundled model and no download.",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default: %(default)s)")
    parser.add_argument("--max_pixels", type=int, default=MAX_INPUT_PIXELS,
                        help="largest input accepted, in pixels (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # for gradio's telemetry outside the Blocks too
    from .models import ModelError, ModelStore
    from .ui import build_demo, launch

    try:
        demo = build_demo(ModelStore(), max_pixels=args.max_pixels)
    except ModelError as error:  # the bundled model is missing or broken
        print(f"iter-sr-app: error: {error}", file=sys.stderr)
        return 2
    # gradio prints "To create a public link, set `share=True` in `launch()`", which a user of this command cannot
    # act on, unless launch(quiet=True); quiet also drops its "Running on local URL" line, so ours replaces it.
    demo.launch = functools.partial(demo.launch, quiet=True)
    print(f"iter-sr-app: serving the ITER demo on http://{args.host}:{args.port}/ (Ctrl+C to stop)", flush=True)
    launch(demo, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
