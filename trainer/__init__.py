"""Training side of seqlstm. Importing the package imports no torch: the text-to-arrays path
(`trainer.core.preprocess`), the configs and the data readers are shared with the torch-free server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqlstm")  # recorded in every artifact's metadata
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
