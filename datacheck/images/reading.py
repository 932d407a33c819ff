"""Reading an image file's bytes, with OS errors worded as :class:`ImageDecodeError` reasons.

Every failure to read or decode an image is an :class:`ImageDecodeError` whose one-line reason starts with a
stable head (``"file not found: …"``) that reports group by; :func:`datacheck.images.decode.decode_image`
raises the same error for bytes it cannot decode.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Files larger than this are refused by :func:`read_file`.
MAX_FILE_BYTES = 1 << 30


class ImageDecodeError(Exception):
    """An image could not be read or decoded.

    Attributes:
        reason: One line, ``"<stable head>: <detail>"`` (e.g. ``"truncated file: image data ends early"``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole file, turning OS errors into :class:`ImageDecodeError` with a user-facing reason.

    Args:
        path: File to read.
        max_bytes: Larger files are refused without being read.

    Returns:
        The file's bytes.

    Raises:
        ImageDecodeError: ``"permission denied: …"``, ``"file not found: …"``, ``"is a folder: …"``,
            ``"file too large: …"`` or ``"cannot read file: …"``.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ImageDecodeError(f"file too large: {size} bytes exceeds the limit of {max_bytes}")
            return handle.read()
    except PermissionError as err:
        raise ImageDecodeError(
            "permission denied: this user may not read the file; check its permissions"
        ) from err
    except FileNotFoundError as err:
        raise ImageDecodeError(
            "file not found: it was moved or deleted after the dataset was scanned"
        ) from err
    except IsADirectoryError as err:
        raise ImageDecodeError("is a folder: expected an image file") from err
    except OSError as err:
        raise ImageDecodeError(f"cannot read file: {err.strerror or err}") from err
