"""The ITER web demo (``iter-sr-app``): a gradio page that super-resolves an upload and shows ITER at work.

Modules, one idea each; only :mod:`.ui` and :mod:`.cli` import gradio:

* :mod:`.uploads`: read an uploaded file within the page's size limit, with a message for what cannot be used.
* :mod:`.models`: the model choices, loading a pipeline (one kept in memory) and the licence of its weights.
* :mod:`.speed`: the time estimate, from the speed measured on this machine.
* :mod:`.restore`: run the pipeline on one image, with progress, and collect the per-step images and keep-masks.
* :mod:`.views`: the images the page shows (before/after, image | keep-mask panels).
* :mod:`.texts`: what the page says about the model, the input and the run.
* :mod:`.ui`: the gradio page;  :mod:`.cli`: the ``iter-sr-app`` command (also run by the repository's ``app.py``).
"""
