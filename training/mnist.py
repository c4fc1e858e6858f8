"""MNIST by name: from $VAE_EDGE_DATA if it holds it, else downloaded once and checked.

Looks for `mnist.npz` (keys x_train, y_train, x_test, y_test) or the four standard IDX
files (optionally .gz) in $VAE_EDGE_DATA. Otherwise downloads the standard gzip files into
the cache ($VAE_EDGE_CACHE, default ~/.cache/vae-edge) and checks each file's sha256.
NumPy and the standard library only.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from vae_edge.runtime.data import Data, read_data
from vae_edge.runtime.errors import InputError

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {  # name -> sha256 of the published gzip file
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def cache_dir() -> Path:
    return Path(os.environ.get("VAE_EDGE_CACHE", Path.home() / ".cache" / "vae-edge"))


def load_mnist(mirror: str = MIRROR, checksums: dict[str, str] = FILES) -> Data:
    data_dir = os.environ.get("VAE_EDGE_DATA")
    if data_dir:
        local = Path(data_dir)
        if (local / "mnist.npz").is_file():
            return read_data(local / "mnist.npz")
        if all(_idx_file(local, name) for name in checksums):
            return _from_idx(local, checksums)
    target = cache_dir() / "mnist"
    for name, sha in checksums.items():
        download(mirror + name + ".gz", target / (name + ".gz"), sha)
    return _from_idx(target, checksums)


def download(url: str, dest: Path, sha256: str) -> Path:
    """Fetch url to dest unless a file with the right sha256 is already there."""
    if dest.is_file() and _sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except (urllib.error.URLError, OSError) as e:
            os.unlink(tmp.name)
            raise InputError(f"could not download {url} ({e})") from None
    if _sha256(Path(tmp.name)) != sha256:
        os.unlink(tmp.name)
        raise InputError(f"{url}: sha256 does not match the published checksum; not used")
    os.replace(tmp.name, dest)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _from_idx(folder: Path, names) -> Data:
    x_train, y_train, x_test, y_test = (read_idx(_idx_file(folder, n)) for n in names)
    return Data(x_train, y_train, x_test, y_test)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): big-endian header, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: IDX header says {tuple(dims)} but the file is truncated")
    return data.reshape(tuple(dims))
