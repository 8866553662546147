"""Helpers shared by inference, evaluation and training; NumPy and Pillow only (no OpenCV or SciPy), torch only
in :mod:`.devices`.

* :mod:`.image_files`: reading images into float arrays (one 16-bit rule) and back to 8 bits;
* :mod:`.imresize`: MATLAB's bicubic ``imresize``;
* :mod:`.gaussian`: Gaussian kernels;
* :mod:`.devices`: whether the process has an accelerator.
"""
