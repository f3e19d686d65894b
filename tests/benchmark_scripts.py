"""Load a script of benchmarks/ as a module, for the tests of the tools themselves.
(A plain module beside tiny_models.py, for the same reason: no `from conftest`.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str) -> ModuleType:
    """benchmarks/<script>.py, registered as `<script>_tool` (dataclasses look their module
    up by name)."""
    name = f"{script}_tool"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
