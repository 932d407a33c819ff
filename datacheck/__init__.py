"""datacheck: audit image-classification datasets before you train on them.

Importing this package is cheap: TensorFlow and the model are loaded only when embedding runs.
"""

from datacheck._version import __version__

__all__ = ["__version__"]
