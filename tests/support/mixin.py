"""mixin/render.py (the mixin's renderer), loaded from its path: mixin/ is no package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

RENDER_PY = Path(__file__).resolve().parents[2] / "mixin" / "render.py"

_spec = importlib.util.spec_from_file_location("mixin_render", RENDER_PY)
assert _spec is not None and _spec.loader is not None
mixin_render = importlib.util.module_from_spec(_spec)
sys.modules["mixin_render"] = mixin_render
_spec.loader.exec_module(mixin_render)
