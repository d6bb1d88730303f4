"""A test-environment workaround, not product code: the CPU vLLM venv here has no torchvision (its
only wheels are CUDA builds that fail to import beside the CPU torch; see
shared/reference/engines-on-cpu.md), and vLLM 0.32 cannot load a LLaVA model without it.

vLLM's llava.py imports pixtral.py, which imports `_num_image_tokens` from transformers 5's
torchvision-only `image_processing_pixtral`. The `sitecustomize.py` written here (its folder goes on
PYTHONPATH: vLLM's registry probe, engine core and worker are separate interpreters) serves that
module from its PIL twin, which defines the same helper, when torchvision is missing. A real
deployment's image has torchvision and never loads this."""

from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE = """\
import importlib, importlib.abc, importlib.util, sys

_NAME = "transformers.models.pixtral.image_processing_pixtral"


class _PilPixtralAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name != _NAME or importlib.util.find_spec("torchvision") is not None:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pil = importlib.import_module("transformers.models.pixtral.image_processing_pil_pixtral")
        module.__dict__.update({k: v for k, v in vars(pil).items() if not k.startswith("__")})


sys.meta_path.insert(0, _PilPixtralAlias())
"""


def write_vision_shim(folder: Path) -> Path:
    """`folder/sitecustomize.py`; returns the folder, for PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder
