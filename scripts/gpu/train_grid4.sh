#!/usr/bin/env bash
# Issue 21's next experiment on one GPU, in one call of the device tool (≤ 10 min): the demo recipe on a VQGAN with
# one token per 4×4 HQ pixels (configs/iter_x4_grid4.json), with a larger φ_r trained far longer than a CPU allows,
# then scored on the 4 tuning photos beside bicubic, α = 0 and the VQGAN's perfect tokens (docs/demo-model.md).
#   here:    bash scripts/gpu/prepare.sh      (wheels, photos and SqueezeNet weights into .gpu/, git-ignored)
#   device:  run(command="bash scripts/gpu/train_grid4.sh", carry=[".gpu"], timeout_s=600)
# Each stage stops at its step count or its minutes, whichever comes first (--max_train_minutes), and saves. A stage
# the clock stops ends before its cosine schedule has decayed: set *_STEPS from the seconds per step that the log
# prints, so that the next call's schedules end with their stages.
# $OUT (set by the device tool; data_cache/grid4_gpu elsewhere) receives log.txt, eval.json and the model folder (model.tar.gz.part-*).
# Without CUDA it runs on the CPU: SMOKE=1 bash scripts/gpu/train_grid4.sh checks the whole chain in minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-data_cache/grid4_gpu}
WORK=${WORK:-data_cache/grid4_work}
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/log.txt") 2>&1
BATCH=${BATCH:-32}
VQ_STEPS=${VQ_STEPS:-4000}; VQ_MINUTES=${VQ_MINUTES:-1.5}
ENCODER_STEPS=${ENCODER_STEPS:-2000}; ENCODER_MINUTES=${ENCODER_MINUTES:-0.75}
LQ_STEPS=${LQ_STEPS:-20000}; LQ_MINUTES=${LQ_MINUTES:-3}
if [ "${SMOKE:-0}" = 1 ]; then BATCH=2; VQ_STEPS=2; ENCODER_STEPS=2; LQ_STEPS=2; fi

# The device image lacks diffusers and datasets: install the carried wheels beside it; the package runs from src/.
if [ -d .gpu/wheels ] && ! python3 -c "import diffusers, datasets" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target data_cache/gpu_site .gpu/wheels/*.whl
  export PYTHONPATH=$PWD/data_cache/gpu_site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -d .gpu/assets ] && export HF_ASSETS_CACHE="$PWD/.gpu/assets"  # the SqueezeNet weights, converted here
DATA=.gpu/data
[ -d "$DATA/train" ] || DATA=data_cache/demo_dataset_512
python3 -c "import torch, diffusers, datasets; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'datasets', datasets.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
if python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  LAUNCH="python3 -m accelerate.commands.launch --num_processes 1 --mixed_precision bf16 --dynamo_backend no examples/train_iter.py"
  WORKERS=8
else
  LAUNCH="python3 -m accelerate.commands.launch --cpu --num_processes 1 --mixed_precision no --dynamo_backend no examples/train_iter.py"
  WORKERS=0
fi
COMMON="--train_data_dir $DATA/train --resolution 128 --train_batch_size $BATCH --dataloader_num_workers $WORKERS
  --checkpointing_steps 100000 --validation_steps 100000 --seed 0 --report_to none"

# 1. The VQGAN, with the LPIPS-style SqueezeNet perceptual loss and dead-code restarts (as the CPU 4×4 run).
$LAUNCH --stage vqgan --model_config configs/iter_x4_grid4.json $COMMON --max_train_steps "$VQ_STEPS" \
  --max_train_minutes "$VQ_MINUTES" --perceptual_network squeeze --perceptual_weight 1 --gan_weight 0 \
  --codebook_restart_steps 20 --learning_rate 4e-4 --lr_scheduler cosine --lr_warmup_steps 100 --output_dir "$WORK/vqgan"
# 2. E_l from that VQGAN's encoder, regressing the HQ latents (stage II of the demo recipe).
$LAUNCH --stage lq --pretrained_model_name_or_path "$WORK/vqgan" $COMMON --max_train_steps "$ENCODER_STEPS" \
  --max_train_minutes "$ENCODER_MINUTES" --train_components encoder --encoder_from_vqgan --encoder_token_ce_weight 0 \
  --encoder_latent_weight 1 --learning_rate 1e-4 --lr_scheduler cosine --lr_warmup_steps 100 --perceptual_weight 0 \
  --output_dir "$WORK/encoder"
# 3. φ_e and φ_r on the frozen VQGAN and E_l (the official losses), as long as the call allows.
$LAUNCH --stage lq --pretrained_model_name_or_path "$WORK/encoder" $COMMON --max_train_steps "$LQ_STEPS" \
  --max_train_minutes "$LQ_MINUTES" --train_components evaluator,refiner --learning_rate 4e-4 --lr_scheduler cosine \
  --lr_warmup_steps 200 --perceptual_weight 0 --output_dir "$WORK/lq"
for stage in vqgan encoder lq; do python3 -c "import json; s = json.load(open('$WORK/$stage/training_summary.json')); print('$stage', s['steps'], 'steps,', round(s['seconds_per_step'], 3), 's/step, stopped by time:', s['stopped_by_max_train_minutes'])"; done

# 4. The model folder first, in parts of 15 MiB (the device tool returns files of at most 16 MiB), so that it comes
#    back even if the scoring runs out of time; join them with: cat model.tar.gz.part-* | tar -xz
tar -cz -C "$WORK" --exclude 'checkpoint-*' --exclude validation lq | split -b 15M - "$OUT/model.tar.gz.part-"
# 5. Scores on the tuning photos (both chains, 2 wavelet levels, T = 4), as in docs/demo-model.md's 4×4 table.
C='"color_fix": "wavelet", "color_fix_levels": 2, "num_inference_steps": 4'
timeout "${SCORE_SECONDS:-150}" python3 scripts/evaluate_demo_model.py --model "$WORK/lq" --set "tune=$DATA/tune" \
  --max_side 256 --no_realesrgan --vqgan_bounds --json "$OUT/eval.json" --variant "alpha0={$C, \"mask_threshold\": 0}" \
  --variant "alpha07={$C, \"mask_threshold\": 0.7}" --variant "alpha07_t05={$C, \"mask_threshold\": 0.7, \"token_temperature\": 0.5}" \
  --variant "alpha03_argmax={$C, \"mask_threshold\": 0.3, \"token_temperature\": 0.01}" | tail -20
ls -la "$OUT"
