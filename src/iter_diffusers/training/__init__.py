"""Training utilities for ITER: on-the-fly LQ synthesis (:mod:`.degradations`) and losses (:mod:`.losses`).

Nothing is imported here eagerly, so ``import iter_diffusers`` never pulls in OpenCV or SciPy; import the
submodules directly, e.g. ``from iter_diffusers.training.degradations import degrade``. They need the ``training``
extra (``pip install iter-diffusers[training]``).
"""
