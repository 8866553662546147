#!/usr/bin/env bash
# Reproduces the bundled demo model (src/iter_diffusers/pretrained/iter-demo-x4), its model card and the README's
# comparison image on a CPU machine:
#   bash scripts/train_demo_model.sh
# Steps and batch sizes can be overridden:
#   VQ_STEPS=... ENCODER_STEPS=... LQ_STEPS=... GAN_STEPS=... DECODER_STEPS=... DISTILL_STEPS=... BATCH=... \
#     bash scripts/train_demo_model.sh
# Everything it downloads or writes goes under data_cache/ (git-ignored) except the final model folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VQ_STEPS=${VQ_STEPS:-3500}
ENCODER_STEPS=${ENCODER_STEPS:-2000}
LQ_STEPS=${LQ_STEPS:-3000}
GAN_STEPS=${GAN_STEPS:-500}
DECODER_STEPS=${DECODER_STEPS:-500}
DISTILL_STEPS=${DISTILL_STEPS:-1000}
BATCH=${BATCH:-8}
COLOR_FIX_LEVELS=${COLOR_FIX_LEVELS:-2}      # sampling defaults (step 8)
STEPS=${STEPS:-4}
TOKEN_TEMPERATURE=${TOKEN_TEMPERATURE:-1.0}
MASK_THRESHOLD=${MASK_THRESHOLD:-0.0}
WORK=${WORK:-data_cache/demo_run}
DATA=data_cache/demo_dataset_512
REALWORLD=${REALWORLD:-../shared/data/realworld_lq}  # real LQ photos for NIQE (optional; skipped when absent)
# bf16 autocast only where the CPU computes bf16 natively (avx512_bf16 / AMX): there it is ~1.6x faster than fp32;
# on AVX2-only CPUs bf16 convolutions are hundreds of times slower, so those train in fp32.
PRECISION=${PRECISION:-$(grep -q -E "avx512_bf16|amx_bf16" /proc/cpuinfo 2>/dev/null && echo bf16 || echo no)}
echo "mixed precision: $PRECISION"
LAUNCH="accelerate launch --cpu --num_processes 1 --mixed_precision $PRECISION --dynamo_backend no examples/train_iter.py"

# 1. The offline data set (57 train / 4 tuning / 10 held-out photos), long sides capped at 512 px.
[ -f "$DATA/train/metadata.jsonl" ] || python scripts/build_demo_dataset.py --output_dir "$DATA" --max_side 512

# 2. Stage I: the Swin-VQGAN on HQ crops. No VGG weights offline, so no perceptual loss; no GAN in a run this short;
#    dead-code restarts every 20 steps (without them the codebook collapsed to 19 of 512 codes in 400 steps);
#    cosine decay, which settles the noisy end of a constant-LR run.
$LAUNCH --stage vqgan --model_config configs/iter_x4_demo.json --train_data_dir "$DATA/train" \
  --validation_data_dir "$DATA/tune" --validation_resolution 128 --resolution 128 --train_batch_size "$BATCH" \
  --max_train_steps "$VQ_STEPS" --learning_rate 4e-4 --lr_scheduler cosine --lr_warmup_steps 100 --perceptual_weight 0 --gan_weight 0 --codebook_restart_steps 20 \
  --checkpointing_steps 250 --checkpoints_total_limit 1 --validation_steps 500 --seed 0 \
  --output_dir "$WORK/vqgan" --resume_from_checkpoint latest

# 3. Stage II, E_l: an ITERUpsamplingEncoder started from the trained VQGAN (its encoder on the bicubic upscale, a
#    head scoring codebook distances: at step 0 it already renders the bicubic image's tokens), trained alone to
#    regress the VQGAN latents of the HQ image. The token CE is off: from this start it drifted E_l towards a few
#    central codes (tuning photos: 7.7 % -> 3.6 % right tokens, -4 dB in 300 steps, at 4e-4, 5e-5 and 1e-5 alike).
$LAUNCH --stage lq --pretrained_model_name_or_path "$WORK/vqgan" --train_data_dir "$DATA/train" \
  --validation_data_dir "$DATA/tune" --validation_resolution 256 --resolution 128 --train_batch_size "$BATCH" \
  --train_components encoder --encoder_from_vqgan --encoder_token_ce_weight 0 --encoder_latent_weight 1 \
  --max_train_steps "$ENCODER_STEPS" --learning_rate 1e-4 --lr_scheduler cosine --lr_warmup_steps 100 --perceptual_weight 0 \
  --checkpointing_steps 500 --checkpoints_total_limit 1 --validation_steps 500 --seed 0 \
  --output_dir "$WORK/encoder" --resume_from_checkpoint latest

# 4. Stage III: φ_e and φ_r on the frozen VQGAN and E_l, LQ synthesised by the light BSRGAN pipeline (the official
#    losses: class-balanced CE + mask CE for φ_e, masked refinement CE for φ_r).
$LAUNCH --stage lq --pretrained_model_name_or_path "$WORK/encoder" --train_data_dir "$DATA/train" \
  --validation_data_dir "$DATA/tune" --validation_resolution 256 --resolution 128 --train_batch_size "$BATCH" \
  --train_components evaluator,refiner \
  --max_train_steps "$LQ_STEPS" --learning_rate 4e-4 --lr_scheduler cosine --lr_warmup_steps 100 --perceptual_weight 0 \
  --checkpointing_steps 500 --checkpoints_total_limit 1 --validation_steps 500 --seed 0 \
  --output_dir "$WORK/lq" --resume_from_checkpoint latest

# 5. Stage IV: E_l again, with an adversarial loss on its own image (its latents rendered straight-through by the
#    frozen decoder; a half-width U-Net discriminator) beside the latent regression. Latent regression alone gives
#    the conditional mean of the HQ latents, whose codes are those of smooth patches; 500 steps of this make the
#    edges visibly crisper (tuning photos, heldout chain, 2 levels, α = 0: 28.56 -> 28.41 dB, bicubic 28.27).
$LAUNCH --stage lq --pretrained_model_name_or_path "$WORK/lq" --model_config configs/iter_x4_demo_discriminator.json \
  --train_data_dir "$DATA/train" --validation_data_dir "$DATA/tune" --validation_resolution 256 --resolution 128 \
  --train_batch_size "$BATCH" --train_components encoder --encoder_token_ce_weight 0 --encoder_latent_weight 1 \
  --lq_gan --gan_weight 0.1 --max_train_steps "$GAN_STEPS" --learning_rate 1e-4 --lr_scheduler constant \
  --perceptual_weight 0 --checkpointing_steps 250 --checkpoints_total_limit 1 --validation_steps 100000 --seed 0 \
  --output_dir "$WORK/encoder_gan" --resume_from_checkpoint latest

# 6. Stage V: the VQGAN's decoder, its encoder and codebook frozen (no token changes), learns to render E_l's tokens
#    S_l as the HQ image (L1 + SSIM, plus the same on the HQ image's own tokens, so that it stays the HQ decoder that
#    φ_r's tokens need) with a hinge GAN on its image of S_l. The decoder of stage I (no GAN, no perceptual loss) is
#    itself soft: even the HQ image's own tokens render at edge sharpness 0.48 of the HQ's (tuning photos). After
#    this stage, tuning photos (heldout chain, defaults): edge sharpness 0.382 -> 0.455 (bicubic 0.306), PSNR
#    28.41 -> 27.82 dB (bicubic 28.27); the HQ tokens' own rendering 28.85 -> 28.42 dB.
$LAUNCH --stage lq --pretrained_model_name_or_path "$WORK/encoder_gan" --model_config configs/iter_x4_demo_discriminator.json \
  --train_data_dir "$DATA/train" --validation_data_dir "$DATA/tune" --validation_resolution 256 --resolution 128 \
  --train_batch_size "$BATCH" --train_components decoder --lq_gan --gan_weight 0.1 --max_train_steps "$DECODER_STEPS" \
  --learning_rate 1e-4 --lr_scheduler constant --perceptual_weight 0 --checkpointing_steps 250 \
  --checkpoints_total_limit 1 --validation_steps 100000 --seed 0 \
  --output_dir "$WORK/decoder_gan" --resume_from_checkpoint latest

# 7. Stage VI: a VQGAN and an E_l slimmer at the finest levels (configs/iter_x4_demo_slim.json), taught by stage V's
#    pipeline: L1 to its decoder's images of the HQ tokens and of S_l, MSE to its VQGAN encoder's and E_l's latents.
#    The codebook is the teacher's and frozen, so the tokens keep their meaning and φ_e, φ_r are copied unchanged.
#    Those levels run at the output resolution, where the default path spends its time.
$LAUNCH --stage distill --pretrained_model_name_or_path "$WORK/decoder_gan" --model_config configs/iter_x4_demo_slim.json \
  --train_data_dir "$DATA/train" --validation_data_dir "$DATA/tune" --validation_resolution 256 --resolution 128 \
  --train_batch_size "$BATCH" --max_train_steps "$DISTILL_STEPS" --learning_rate 4e-4 --lr_scheduler cosine \
  --lr_warmup_steps 50 --perceptual_weight 0 --checkpointing_steps 250 --checkpoints_total_limit 1 \
  --validation_steps 100000 --seed 0 --output_dir "$WORK/distill" --resume_from_checkpoint latest

# 8. Bundle the pipeline (weights, configs) into the package; the model's card so far is kept for step 10, which
#    takes from it the records of stages whose run folders are gone.
TARGET=src/iter_diffusers/pretrained/iter-demo-x4
[ -f "$TARGET/README.md" ] && cp "$TARGET/README.md" "$WORK/previous_card.md"
rm -rf "$TARGET" && mkdir -p "$TARGET"
cp -r "$WORK/distill"/{model_index.json,vqvae,encoder,evaluator,refiner,scheduler} "$TARGET"/
[ -f "$WORK/distill/validation_grid.png" ] && cp "$WORK/distill/validation_grid.png" "$TARGET"/
python scripts/refresh_folder_code.py "$TARGET"

# 9. The sampling defaults, chosen on the 4 tuning photos (never on the held-out ones) by comparing variants
#    (wavelet levels 1-3, α 0 and 0.7, T 4 and 8; before stage IV also token temperatures 0.1 and 1):
#    python scripts/evaluate_demo_model.py --model "$WORK/decoder_gan" --set tune="$DATA/tune" --variant NAME='{...}'
#    With stage V's decoder 2 levels stay: 27.82 dB / edge sharpness 0.455, against 25.94 / 0.605 for 3 levels
#    (blotchy shapes, 2.3 dB under bicubic).
#    Every refinement cost fidelity: with 2 levels, α 0.7 gave 26.66 dB against 28.41 for α = 0 and bicubic's
#    28.27 (heldout chain), and speckle. So α = 0: φ_e trusts every token of S_l and φ_r does not run. 2 levels
#    (28.41 / SSIM 0.7424) against 1 (28.48 / 0.7416) and 3 (27.68 / 0.7347): the best SSIM, more of the model.
python scripts/set_pipeline_defaults.py "$TARGET" --color_fix wavelet --color_fix_levels "${COLOR_FIX_LEVELS}" \
  --token_temperature "${TOKEN_TEMPERATURE}" --mask_threshold "${MASK_THRESHOLD}" --num_inference_steps "${STEPS}"

# 10. Measure it against bicubic on held-out photos (the data set's val split and the photos of Debian's
#     plasma-workspace-wallpapers, reserved for evaluation), with the training degradations and a chain no training
#     uses, plus real LQ photos when present; draw the README comparison; write the model card.
HELDOUT=data_cache/heldout_plasma
[ -f "$HELDOUT/metadata.jsonl" ] || python scripts/build_heldout_set.py --output_dir "$HELDOUT"
REAL_ARGS=()
[ -d "$REALWORLD" ] && REAL_ARGS=(--realworld_dir "$REALWORLD")
python scripts/evaluate_demo_model.py --model "$TARGET" --set val="$DATA/val" --set plasma="$HELDOUT" \
  --chains heldout,bsrgan_light --niqe "${REAL_ARGS[@]}" --json "$WORK/evaluation.json" \
  --outputs "$WORK/evaluation_outputs" --comparison docs/images/demo_comparison.png \
  --comparison_image plasma/plasma_ColorfulCups --comparison_image plasma/plasma_FallenLeaf \
  --comparison_image plasma/plasma_Path --comparison_image val/skimage_coffee
PREVIOUS_ARGS=()
[ -f "$WORK/previous_card.md" ] && PREVIOUS_ARGS=(--previous_card "$WORK/previous_card.md")
python scripts/write_demo_model_card.py --model "$TARGET" --run "$WORK" --data "$DATA" --eval "$WORK/evaluation.json" \
  "${PREVIOUS_ARGS[@]}"
echo "bundled model in $TARGET"
