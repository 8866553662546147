"""Pipeline folders that plain diffusers loads: ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.

A saved folder names its pipeline and components after code files it carries (diffusers' custom-code layout):
``model_index.json`` says ``"_class_name": ["iter_diffusers_pipeline", "ITERPipeline"]`` and, e.g.,
``"vqvae": ["iter_diffusers_models", "ITERVQModel"]``, and the folder holds ``iter_diffusers_pipeline.py`` (with its
sibling modules) and ``vqvae/iter_diffusers_models.py``. Without this package diffusers runs that code (only with
``trust_remote_code=True``); with it, :meth:`HubCodeMixin.load_config` maps the entries back to the package's own
classes, so ``ITERPipeline.from_pretrained`` never executes a folder's code. Folders written before keep their
package entries and load as they did.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from ..models import (ITERDistortionRemovalEncoder, ITERRefinementTransformer, ITERTokenEvaluator,
                      ITERUpsamplingEncoder, ITERVQModel)
from ..schedulers import MaskedTokenScheduler

HUB_PIPELINE_MODULE = "iter_diffusers_pipeline"
HUB_MODELS_MODULE = "iter_diffusers_models"
HUB_SCHEDULER_MODULE = "iter_diffusers_scheduler"
HUB_MODULES = (HUB_PIPELINE_MODULE, HUB_MODELS_MODULE, HUB_SCHEDULER_MODULE)

#: The classes a folder's code files define, by the flat module that defines them.
HUB_CLASSES = {
    HUB_MODELS_MODULE: (ITERVQModel, ITERDistortionRemovalEncoder, ITERUpsamplingEncoder, ITERTokenEvaluator,
                        ITERRefinementTransformer),
    HUB_SCHEDULER_MODULE: (MaskedTokenScheduler,),
}


def hub_code_files() -> dict[str, str]:
    """``{file name: source}`` of the code a folder carries: when this runs as a folder's own code (plain
    diffusers), that code's files, carried on unchanged; inside the package, built from its sources."""
    here = Path(__file__)
    if here.stem == HUB_PIPELINE_MODULE:
        return {f"{m}.py": here.with_name(f"{m}.py").read_text(encoding="utf-8") for m in HUB_MODULES}
    return importlib.import_module("iter_diffusers.hub_code_builder").build_hub_code()


def _hub_module_of(component) -> str | None:
    """The flat module that defines a component's class (by name: plain diffusers may load a class twice)."""
    name = type(component).__name__
    for module, classes in HUB_CLASSES.items():
        if name in {c.__name__ for c in classes}:
            return module
    return None


def index_has_hub_code(index: dict) -> bool:
    """Whether a ``model_index.json`` names its pipeline after a code file of ours."""
    name = index.get("_class_name")
    return isinstance(name, (list, tuple)) and name[0] == HUB_PIPELINE_MODULE


class HubCodeMixin:
    """For :class:`ITERPipeline`: write folders that carry their code; read them with this code's classes."""

    def save_config(self, save_directory, push_to_hub: bool = False, **kwargs):
        """``model_index.json`` (diffusers' ``save_config``), rewritten to name the code files, and the files. Runs
        last in ``save_pretrained``, after the components and before any upload, so pushes carry the code."""
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
        folder = Path(save_directory)
        files = hub_code_files()
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        index["_class_name"] = [HUB_PIPELINE_MODULE, type(self).__name__]
        for name, component in self.components.items():
            module = _hub_module_of(component)
            if module is not None and (folder / name).is_dir():
                index[name] = [module, type(component).__name__]
                (folder / name / f"{module}.py").write_text(files[f"{module}.py"], encoding="utf-8")
        for file_name, text in files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
        (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8")

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' ``load_config``, with a folder's code-file entries mapped to this code's classes: loading
        through this class never runs the folder's code."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if index_has_hub_code(config):
            own = {c.__name__: c for classes in HUB_CLASSES.values() for c in classes}
            config["_class_name"] = cls.__name__
            for key, entry in config.items():
                if isinstance(entry, list) and len(entry) == 2 and entry[0] in HUB_MODULES and entry[1] in own:
                    config[key] = [own[entry[1]].__module__, entry[1]]
        return loaded

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``. A Hub repo whose folder carries code is fetched whole first: diffusers'
        own download would resolve its pipeline class from the repo's code, which only ``trust_remote_code`` may
        run; the local copy is then read with this code's classes (see :meth:`load_config`)."""
        path = str(pretrained_model_name_or_path)
        if not os.path.isdir(path) and path.count("/") == 1:
            path = _snapshot_if_hub_code(path, kwargs) or path
        return super().from_pretrained(path, **kwargs)


def _snapshot_if_hub_code(repo_id: str, kwargs: dict) -> str | None:
    """The local snapshot of a Hub repo whose model_index names our code files, else None (diffusers' path)."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    hub = {k: kwargs.get(k) for k in ("revision", "cache_dir", "token", "proxies")}
    hub["local_files_only"] = kwargs.get("local_files_only", False)
    try:
        index_file = hf_hub_download(repo_id, "model_index.json", **hub)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
        return None  # diffusers' from_pretrained gives its own error for this repo
    if not index_has_hub_code(json.loads(Path(index_file).read_text(encoding="utf-8"))):
        return None
    return snapshot_download(repo_id, **hub)
