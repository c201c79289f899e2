"""Locate and verify the offline data files.

Nothing is downloaded at run time. A file is looked for in, in order: the configured data directory
(``paths.data_dir``) if one is given, else the ``METALAB_DATA_DIR`` environment variable, ``data/``
under the working directory and the repository, and ``../shared/data`` beside them. Every file is
checked against its sha256 before it is used, so a truncated or corrupt copy fails loudly instead of
training on garbage.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from metalab.errors import DataError

ENV_VAR = "METALAB_DATA_DIR"

# sha256 of every file we read, from shared/data/README.md.
CHECKSUMS: dict[str, str] = {
    "omniglot/omniglot.npz": "a9e3491b05e6873a02045b93dd27696430aa89949362bcd66799a5086b6507f8",
    "omniglot/splits/vinyals/train.txt": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "omniglot/splits/vinyals/val.txt": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "omniglot/splits/vinyals/trainval.txt": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
    "omniglot/splits/vinyals/test.txt": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    "cifar10/cifar10.npz": "248eec9a3bbe72817f6ca5eaaf3af0df73eccd775be89f7d8d00a2cb133184f2",
    "mnist/mnist.npz": "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
}

_REPO_ROOT = Path(__file__).resolve().parents[3]


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for data, most specific first (an explicit ``data_dir`` is the only one)."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    dirs: list[Path] = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    for root in (Path.cwd(), _REPO_ROOT):
        dirs += [root / "data", root.parent / "shared" / "data"]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def locate(relpath: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return the verified path of ``relpath`` (e.g. ``"omniglot/omniglot.npz"``).

    Raises :class:`DataError` naming every directory searched when the file is missing, and the
    expected and actual sha256 when it is corrupt.
    """
    searched = candidate_dirs(data_dir)
    for d in searched:
        path = d / relpath
        if path.is_file():
            verify(path, relpath)
            return path
    where = ", ".join(str(d.resolve()) for d in searched)
    raise DataError(
        f"data file {relpath!r} not found; looked in: {where}. "
        f"Set paths.data_dir=... or the {ENV_VAR} environment variable to the folder that holds it."
    )


def verify(path: Path, relpath: str) -> None:
    """Check ``path`` against the known sha256 of ``relpath`` (files we do not know are refused)."""
    expected = CHECKSUMS.get(relpath)
    if expected is None:
        raise DataError(f"no checksum is known for {relpath!r}; add it to metalab.data.files.CHECKSUMS")
    actual = _sha256(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
    if actual != expected:
        raise DataError(
            f"data file {path} is corrupt: sha256 {actual} does not match the expected {expected}. "
            "Replace it with a good copy."
        )


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, cached per (path, size, mtime) so one process hashes each file once."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
