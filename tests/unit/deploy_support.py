"""Loads the deployment checks (deploy/validate.py, deploy/envcheck.py) and the images' scripts
(deploy/docker/bin/, deploy/docker/pin_requirements.py) by path: they ship with the deployment
files, not inside the imagefleet package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load(relative: str) -> ModuleType:
    """The module at ROOT/relative, imported once."""
    name = "deploy_" + relative.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
