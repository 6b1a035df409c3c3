"""Loading a plug-in an environment variable names as `module:attribute` (the point counter of
`verify --deep`, the shard reader of a logical copy from archives): one sentence for every way
it can be wrong."""

from __future__ import annotations

import importlib
from typing import Any

from qbr.errors import QbrError


def load_plugin(variable: str, setting: str, method: str, signature: str) -> Any:
    """Instantiate `module:attribute` and check it offers `method`."""
    module_name, _, attribute = setting.partition(":")
    if not module_name or not attribute:
        raise QbrError(f"{variable}={setting} is not module:attribute")
    try:
        plugin = getattr(importlib.import_module(module_name), attribute)()
    except Exception as error:
        raise QbrError(
            f"{variable}={setting} cannot be loaded ({error.__class__.__name__}: {error}); "
            "for Qdrant's engine install qdrant-edge-py (pip install 'qbr[deep]')"
        ) from None
    if not callable(getattr(plugin, method, None)):
        raise QbrError(f"{variable}={setting} gave {plugin!r}, which has no {method}({signature}) method")
    return plugin
