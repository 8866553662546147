#!/usr/bin/env python
"""Convert the official ITER release checkpoints into an ITERPipeline folder (safetensors + model card).

    python scripts/convert_weights.py --vqgan_checkpoint ITER_swinvqgan.pth \
        --iter_checkpoint ITER_x4.pth --output_dir ITER-x4

Every configuration value is inferred from the tensors, so the x2 and x4 releases (and the tiny test
fixtures) convert with the same command. On a bad input the script prints one line and exits with 2,
leaving nothing behind.
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqgan_checkpoint", required=True, help="official ITER_swinvqgan.pth")
    parser.add_argument("--iter_checkpoint", required=True, help="official ITER_x4.pth or ITER_x2.pth")
    parser.add_argument("--output_dir", required=True, help="pipeline folder to create")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="also write an fp16 / bf16 weight variant next to the fp32 weights")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output_dir")
    parser.add_argument("--push_to_hub", action="store_true", help="upload the folder to the Hugging Face Hub")
    parser.add_argument("--hub_model_id", default=None, help="repo id for --push_to_hub (e.g. user/ITER-x4)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        print("error: --push_to_hub needs --hub_model_id", file=sys.stderr)
        return 2
    from iter_diffusers.conversion import ConversionError, convert_and_save, push_folder_to_hub

    try:
        folder = convert_and_save(args.vqgan_checkpoint, args.iter_checkpoint, args.output_dir, args.dtype,
                                  args.overwrite, args.hub_model_id)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder}")
    if args.push_to_hub:
        try:
            print(f"uploaded to {push_folder_to_hub(folder, args.hub_model_id, args.private)}")
        except Exception as error:  # offline, no token, ...
            print(f"error: upload to the Hub failed ({type(error).__name__}: {error}); the folder {folder} is complete",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
