"""Data layer: the shard format, writing shards, and loading batches of codes.

- ``format``: constants, ``Manifest`` (manifest.json), ``check_compatible``.
- ``validate``: per-sample checks shared by writer and loader.
- ``writer``: ``ShardWriter`` (validated, atomic shards + manifest).
- ``decode`` / ``collate``: raw tar sample -> ``Sample`` -> batch dict.
- ``loader``: ``CodesLoader`` (deterministic, resumable, rank-split, bad-sample tolerant), and
  ``expect_for(model_config)``, the format a model checks its data against.
- ``sample_codes`` / ``sample``: the sample data's weightless tokenizers and its shards.
"""

from .format import FORMAT_VERSION, MODALITIES, Manifest, ManifestError, check_compatible
from .loader import CodesLoader, DataError, LoaderStats, expect_for
from .validate import CodesError
from .writer import ShardWriter

__all__ = [
    "FORMAT_VERSION",
    "MODALITIES",
    "CodesError",
    "CodesLoader",
    "DataError",
    "LoaderStats",
    "Manifest",
    "ManifestError",
    "ShardWriter",
    "check_compatible",
    "expect_for",
]
