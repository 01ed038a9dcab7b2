"""Turn MNIST-style IDX files into chunked, compressed Zarr v3 stores."""

__version__ = "0.1.0"

from .convert import PrepConfig, prepare_dataset  # noqa: E402
from .errors import DataPrepError  # noqa: E402
from .zarr_store import validate_store  # noqa: E402

__all__ = ["DataPrepError", "PrepConfig", "prepare_dataset", "validate_store", "__version__"]
