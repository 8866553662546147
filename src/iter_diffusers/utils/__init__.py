"""Helpers shared by inference, evaluation and training; NumPy and Pillow only (no torch, OpenCV or SciPy).

* :mod:`.image_files`: reading images into float arrays (one 16-bit rule) and back to 8 bits;
* :mod:`.imresize`: MATLAB's bicubic ``imresize``;
* :mod:`.gaussian`: Gaussian kernels.
"""
