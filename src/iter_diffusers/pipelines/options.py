"""The values a call's named options take. Torch-free, so that ``iter-sr`` can check its arguments with the
pipeline's own checks before it loads anything."""

COLOR_FIXES = ("wavelet", "adain")  # see color_fix.py
OUTPUT_TYPES = ("pil", "np", "pt", "latent")  # see image_io.postprocess
ENGINES = ("auto", "torch", "openvino")  # see acceleration.optimize_pipeline
