"""The one hash of settings: cache keys, run identities and dataset keys all use it.

sha256 of the JSON of the settings with sorted keys (values JSON cannot write go in as ``str``),
first 16 hex digits. A value computed here is a name on disk (a model's cache entry, a run
directory's identity): changing how it is computed renames everything cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def stable_hash(settings: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 of ``settings`` as sorted JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(**parts: Any) -> str:
    """:func:`stable_hash` of the keyword arguments (what a plugin's cache key is made of, e.g.
    ``config_hash(model=name, params=params, dataset=ctx.dataset_key)``)."""
    return stable_hash(parts)
