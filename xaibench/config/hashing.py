"""The one home of hashes: of settings (cache keys, run identities, dataset keys) and of content
(images, maps, weights, source code, perturbation masks).

Settings: sha256 of the JSON of the settings with sorted keys (values JSON cannot write go in as
``str``), first 16 hex digits. Content: SHA-1 of the bytes, as a key, never for security. A value
computed here is a name on disk (a model's cache entry, a run directory's identity, a cached
map and its checksum): changing how it is computed renames everything cached.
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


def content_digest(*chunks: bytes | str) -> bytes:
    """SHA-1 digest of ``chunks`` in order (``str`` as UTF-8): the content key of images, maps,
    weights and code, and the checksum of a cached map."""
    h = hashlib.sha1()
    for chunk in chunks:
        h.update(chunk.encode() if isinstance(chunk, str) else chunk)
    return h.digest()


def content_hash(*chunks: bytes | str) -> str:
    """:func:`content_digest` as 40 hex digits."""
    return content_digest(*chunks).hex()
