#!/usr/bin/env python
"""Write this package's code into a pipeline folder, in place: ``model_index.json`` then names the code files, which
plain diffusers runs with ``trust_remote_code=True``. The weights are untouched. Configs lose ``_name_or_path``
(the local path a component was saved from).

    python scripts/refresh_folder_code.py src/iter_diffusers/pretrained/iter-demo-x4

Run it on the bundled model after a change to the code it carries (tests/test_plain_diffusers.py says when).
"""

import argparse
import json
import sys
from pathlib import Path

from iter_diffusers import ITERPipeline


def drop_local_paths(folder: Path) -> None:
    for path in [folder / "model_index.json", *folder.glob("*/config.json"), *folder.glob("*/scheduler_config.json")]:
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="pipeline folder to update in place")
    args = parser.parse_args(argv)
    ITERPipeline.from_pretrained(args.folder).save_config(args.folder)  # the index and the code files it names
    drop_local_paths(args.folder)
    print(f"{args.folder}: code files written, model_index.json names them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
