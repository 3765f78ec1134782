"""Interactive ilastik-style pixel classification in Jupyter.

The numpy core (:mod:`~ilastik_widget.core.features`, :mod:`~ilastik_widget.core.annotations`,
:mod:`~ilastik_widget.core.classifier`, :class:`~ilastik_widget.core.session.Session`) imports without any
Jupyter machinery; the widget and the batch tools are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FeatureSelection": "ilastik_widget.core.features",
    "compute_features": "ilastik_widget.core.features",
    "Session": "ilastik_widget.core.session",
    "IlastikWidget": "ilastik_widget.widget.widget",
    "predict_batch": "ilastik_widget.io.batch",
    "open_source": "ilastik_widget.io.sources",
    "save_session": "ilastik_widget.io.project",
    "load_session": "ilastik_widget.io.project",
    "features_for_region": "ilastik_widget.core.features",
    "PixelClassifier": "ilastik_widget.core.classifier",
    "export_session": "ilastik_widget.io.export",
    "export_ilp": "ilastik_widget.io.export",
    "load_ilp": "ilastik_widget.io.export",
    "read_table": "ilastik_widget.io.tables",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ilastik_widget' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
