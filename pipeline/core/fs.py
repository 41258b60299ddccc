"""Files under the data root, wherever it is: a local folder, or an object store (`s3://`,
`gs://`, `abfs://`, any fsspec URL) through universal-pathlib, whose paths have pathlib's
methods (`/`, `glob`, `open`, `read_bytes`, `is_file`, `stat`, `unlink`).

What pathlib does and an object store cannot is here, once: an atomic write (on a local disk a
temporary file renamed into place; on an object store one upload, which the store makes visible
whole or not at all), removing a folder, and moving a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from upath import UPath

# A path under the data root: for a local folder a `PosixUPath`, which is also a
# `pathlib.Path`; for an object store, the store's UPath.
DataPath = UPath
AnyPath = Path | UPath  # what the helpers below take: either kind


def data_path(location: str | Path, storage_options: Mapping[str, Any] | None = None
              ) -> DataPath:
    """The path of a local folder (a plain path or `file://`) or of an object store URL,
    opened with `storage_options` (endpoint, region: never credentials, which come from the
    store's usual environment)."""
    text = str(location)
    if "://" not in text or text.startswith("file://"):
        return UPath(text.removeprefix("file://"))
    # Listings are not cached: another process (a Dask worker) may have written since.
    return UPath(text, **{"use_listings_cache": False, **(storage_options or {})})


def is_local(path: AnyPath) -> bool:
    return isinstance(path, Path)


@contextmanager
def atomic_writer(path: AnyPath) -> Iterator[BinaryIO]:
    """A file to write `path` through, so that `path` is whole or absent, however large: a
    temporary file in the same folder renamed into place, or for an object store a local
    temporary file uploaded as one object when the block ends without error."""
    if not isinstance(path, Path):
        with tempfile.NamedTemporaryFile(prefix=".upload.", suffix=".tmp") as upload:
            yield cast(BinaryIO, upload)
            upload.flush()
            path.fs.put_file(upload.name, path.path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: AnyPath, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (see `atomic_writer`)."""
    if isinstance(path, Path):
        with atomic_writer(path) as fh:
            fh.write(data)
    else:
        path.fs.pipe_file(path.path, data)  # one PUT


def remove_tree(path: AnyPath) -> None:
    """Remove a folder and all it holds (nothing if it is absent)."""
    if isinstance(path, Path):
        shutil.rmtree(str(path), ignore_errors=True)
    elif path.exists():
        path.fs.rm(path.path, recursive=True)


def move(src: AnyPath, dst: AnyPath) -> None:
    """Move a file; atomic on a local disk, a copy then a delete on an object store."""
    if isinstance(src, Path):
        os.replace(str(src), str(dst))
    else:
        src.fs.mv(src.path, UPath(dst).path)
