"""Command line tools of iter-diffusers.

* ``iter-sr`` (:mod:`iter_diffusers.cli.upscale`): super-resolve image files and folders with an ITER pipeline.

The modules are imported on demand (``python -m iter_diffusers.cli.upscale``), so importing this package is cheap.
"""
