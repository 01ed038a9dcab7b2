"""Turn MNIST-style IDX files into chunked, compressed Zarr v3 stores (and generate large derived ones).

Rooms: sources (local or downloaded files, checksums), registry (the files MNIST is), idx (the IDX
reader), zarr_store (the store layout, validation, atomic build), convert (IDX -> store), augment and
generate (the deformed large set, on any distributed Client), digits (what a store holds: classes, pixel
range), atomic (atomic folders, locks), redact (secrets out of logs), cli (the command line and the CLI
runtime job's commands share). Depends on nothing in job.

Names are imported on first use, so that `import data_prep` (which every job process does) stays light.
"""

from __future__ import annotations

from data_prep.lazy import lazy_exports

__version__ = "0.1.0"  # the distribution's (pyproject.toml), recorded in every store's provenance

_EXPORTS = {
    "PrepConfig": "data_prep.convert",
    "prepare_dataset": "data_prep.convert",
    "DataPrepError": "data_prep.errors",
    "validate_store": "data_prep.zarr_store",
}

__all__ = ["DataPrepError", "PrepConfig", "__version__", "prepare_dataset", "validate_store"]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
