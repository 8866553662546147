#!/usr/bin/env python
"""Store default sampling settings in a pipeline folder (its ``model_index.json`` and scheduler config).

    python scripts/set_pipeline_defaults.py src/iter_diffusers/pretrained/iter-demo-x4 \
        --color_fix wavelet --color_fix_levels 3 --token_temperature 0.5

Every setting left out keeps its value. The folder's weights are not touched; ``pipe(image)`` and ``iter-sr`` then
use these defaults unless a call or a flag overrides them. Choose them on a tuning split
(``scripts/evaluate_demo_model.py --variant ...``), never on held-out photos.
"""

import argparse
import json
import sys
from pathlib import Path

from iter_diffusers import ITERPipeline

SCHEDULER_SETTINGS = ("mask_threshold", "token_temperature", "mask_temperature")


def update_json(path: Path, settings: dict) -> None:
    """Set ``settings`` in the JSON file ``path``, keeping every other entry as it is."""
    if settings:
        path.write_text(json.dumps(json.loads(path.read_text()) | settings, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="pipeline folder to update in place")
    parser.add_argument("--color_fix", choices=("wavelet", "adain", "none"))
    parser.add_argument("--color_fix_levels", type=int)
    parser.add_argument("--num_inference_steps", type=int)
    for name in SCHEDULER_SETTINGS:
        parser.add_argument(f"--{name}", type=float)
    args = parser.parse_args(argv)

    pipe = ITERPipeline.from_pretrained(args.model)
    pipeline_settings = {k: getattr(args, k) for k in ("color_fix", "color_fix_levels", "num_inference_steps")
                         if getattr(args, k) is not None}
    if pipeline_settings.get("color_fix") == "none":
        pipeline_settings["color_fix"] = None
    scheduler_settings = {k: getattr(args, k) for k in SCHEDULER_SETTINGS if getattr(args, k) is not None}
    own = ("color_fix", "color_fix_levels", "num_inference_steps")
    color_settings = {k: v for k, v in pipe.config.items() if k in own} | pipeline_settings
    try:  # validated by the constructors, as when the folder is loaded
        ITERPipeline(**pipe.components, **color_settings)
        type(pipe.scheduler)(**{**pipe.scheduler.config, **scheduler_settings})
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    update_json(Path(args.model) / "model_index.json", pipeline_settings)
    update_json(Path(args.model) / "scheduler" / "scheduler_config.json", scheduler_settings)
    print(f"{args.model}: " + ", ".join(f"{k}={v}" for k, v in {**pipeline_settings, **scheduler_settings}.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
