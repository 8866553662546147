"""Command line tools of iter-diffusers.

* ``iter-sr`` (:mod:`iter_diffusers.cli.upscale`): super-resolve image files and folders with an ITER pipeline;
  its options are in :mod:`.arguments`, the expansion of its inputs in :mod:`.inputs`, the reading and writing
  of its image files in :mod:`.images` and its messages in :mod:`.console`.

The modules are imported on demand (``python -m iter_diffusers.cli.upscale``), so importing this package is cheap.
"""
