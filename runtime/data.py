"""Data readers shared by training and runtime: .npz, .npy, .csv, PNG files and PNG folders.

Samples are images (N, H, W[, C]) or vectors (N, D). Nothing here knows about models.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vae_edge.runtime.errors import InputError
from vae_edge.runtime.manifest import is_channels_first
from vae_edge.runtime.series import is_timestamp

SUFFIXES = (".npz", ".npy", ".csv", ".png")


class Data(NamedTuple):
    x: np.ndarray | None  # None only for a file with a test split alone
    y: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def read_data(path: str | Path) -> Data:
    """Read a training set: `.npz` keys `x` or `x_train` (labels `y`/`y_train`, optional
    `x_test`/`y_test`), or any single-array format."""
    path = _existing(path)
    if path.suffix.lower() != ".npz":
        return Data(read_input(path))
    arrays = _npz(path)
    x_key = "x" if "x" in arrays else "x_train" if "x_train" in arrays else None
    if x_key is None and "x_test" not in arrays:
        raise InputError(f"{path}: no 'x', 'x_train' or 'x_test' array (has: {', '.join(arrays)})")
    y_key = "y" if x_key == "x" else "y_train"
    data = Data(arrays.get(x_key), arrays.get(y_key), arrays.get("x_test"), arrays.get("y_test"))
    for x, y, name in ((data.x, data.y, y_key), (data.x_test, data.y_test, "y_test")):
        if x is not None and y is not None and len(y) != len(x):
            raise InputError(f"{path}: {name} has {len(y)} labels for {len(x)} samples")
    return data


def read_input(path: str | Path) -> np.ndarray:
    """Read the samples to score: `.npz` (key `x`, else `x_test`), `.npy`, `.csv`, a PNG file
    or a folder of PNG files. Returns the array as stored; validation is the model's job."""
    path = _existing(path)
    if path.is_dir():
        return _png_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _npz(path)
        for key in ("x", "x_test"):
            if key in arrays:
                return arrays[key]
        raise InputError(f"{path}: no 'x' or 'x_test' array (has: {', '.join(arrays)})")
    if suffix in (".npy", ".csv"):
        parts = list(stream_input(path, rows=1 << 62)[1])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    if suffix == ".png":
        return _png(path)[None]
    raise InputError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)} or a PNG folder)")


def stream_input(path: str | Path, rows: int = 4096) -> tuple[int | None, Iterator[np.ndarray]]:
    """Like read_input, in chunks of at most `rows` samples so that memory does not grow
    with the file: `.npy` is read chunk by chunk from disk and `.csv` line by line; other
    formats are read whole. Returns (number of samples if known, iterator of chunks)."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npy" and not path.is_dir():
        return _stream_npy(path, rows)
    if suffix == ".csv" and not path.is_dir():
        return None, _stream_csv(path, rows)
    x = read_input(path)
    return len(x), (x[i : i + rows] for i in range(0, max(len(x), 1), rows))


def _stream_npy(path: Path, rows: int) -> tuple[int, Iterator[np.ndarray]]:
    fmt = np.lib.format
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InputError(f"{path}: not a valid .npy file (no NPY header)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            headers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            shape, fortran, dtype = headers[version](f) if version in headers else ((), 0, None)
        except (ValueError, EOFError) as e:
            raise InputError(f"{path}: not a valid .npy file ({_first_line(e)})") from None
        offset = f.tell()
    if dtype is not None and dtype.hasobject:
        raise InputError(f"{path}: holds Python objects (pickle), not numbers")
    if fortran or not shape:  # rare layouts (format 3.0, Fortran order, 0-d): read whole
        x = _npy(path)
        return len(x) if x.ndim else 1, iter([x])
    per_row = math.prod(shape[1:]) * dtype.itemsize
    expected = offset + shape[0] * per_row
    if os.path.getsize(path) < expected:
        raise InputError(f"{path}: truncated .npy file (header says {shape})")

    def chunks():
        with open(path, "rb") as f:
            f.seek(offset)
            for start in range(0, max(shape[0], 1), rows):
                n = min(rows, shape[0] - start)
                data = np.fromfile(f, dtype=dtype, count=n * per_row // dtype.itemsize)
                yield data.reshape(n, *shape[1:])

    return shape[0], chunks()


def _stream_csv(path: Path, rows: int) -> Iterator[np.ndarray]:
    """Numeric CSV, comma separated; a first line that is not numeric is taken as a header."""
    header = not _is_numeric_row(_csv_first_line(path))
    with open(path, encoding="utf-8-sig") as f:
        if header:
            next(f)
        line_no = 1 + header
        columns = None
        while lines := list(itertools.islice(f, rows)):
            chunk = _parse_csv_lines(path, lines, line_no, columns)
            line_no += len(lines)
            if len(chunk):
                columns = chunk.shape[1]
                yield chunk
        if columns is None:
            raise InputError(f"{path}: no data rows")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    return path


def _npy(path: Path) -> np.ndarray:
    """np.load, for the .npy layouts that are not streamed (Fortran order, format 3.0)."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(f"{path}: holds Python objects (pickle), not numbers") from None
        raise InputError(f"{path}: not a valid .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: not a valid .npy file ({e})") from None


def _npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile  # here, not at the top: only .npz needs it, and it is 2% of a start

    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise InputError(f"{path}: not a .npz archive")
            return {key: f[key] for key in f.files}
    except InputError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(f"{path}: holds Python objects (pickle), not numbers") from None
        raise InputError(f"{path}: not a valid .npz file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a valid .npz file ({e})") from None


def _csv_first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    if not first.strip():
        raise InputError(f"{path}: empty CSV file")
    return first


def _parse_csv_lines(path: Path, lines: list[str], first_line_no: int, columns) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data" (blank lines)
            x = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
        if columns is None or len(x) == 0 or x.shape[1] == columns:
            return x
    except ValueError:
        pass
    # Find the first bad line, to name it (only on the error path).
    for number, line in enumerate(lines, first_line_no):
        if not line.strip():
            continue
        cells = line.rstrip("\r\n").split(",")
        for column, cell in enumerate(cells, 1):
            if not cell.strip():
                raise InputError(f"{path}: line {number}, column {column}: missing value")
            try:
                float(cell)
            except ValueError:
                if is_timestamp(cell):
                    raise InputError(
                        f"{path}: line {number}: {cell.strip()!r} is a timestamp: a series? "
                        "train a windowed model with --window (and score with it)"
                    ) from None
                raise InputError(
                    f"{path}: line {number}: {cell.strip()!r} is not a number "
                    "(only numbers are accepted)"
                ) from None
        if columns is not None and len(cells) != columns:
            raise InputError(f"{path}: line {number} has {len(cells)} values, not {columns}")
        columns = len(cells)
    raise InputError(f"{path}: not a numeric CSV file")


def _is_numeric_row(line: str) -> bool:
    try:
        [float(cell) for cell in line.split(",")]
    except ValueError:
        return False
    return True


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise InputError(f"{path}: not a PNG image")
            grey = im.mode in ("1", "L", "LA", "I", "I;16") or (
                im.mode == "P" and im.palette.mode == "L"
            )
            return np.asarray(im.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable PNG image ({_first_line(e)})") from None


def _png_folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise InputError(f"{path}: folder holds no .png files")
    images = [_png(p) for p in files]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(f"{path}: PNG files differ in size or channels ({sorted(shapes)})")
    return np.stack(images)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) image as PNG."""
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


@contextmanager
def atomic_output(path: str | Path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds,
    so a failed or interrupted run leaves no partial file and the old file intact."""
    path = Path(path)
    tmp = _temporary_beside(path)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the file its usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pairs_grid(originals: np.ndarray, others: np.ndarray, columns: int = 8) -> np.ndarray:
    """image_grid with each row of originals followed by the same row of `others` (e.g.
    their reconstructions)."""
    rows = []
    for i in range(0, len(originals), columns):
        rows += [originals[i : i + columns], others[i : i + columns]]
        if len(rows[-1]) < columns:  # pad a short last row pair so the columns line up
            pad = np.zeros((columns - len(rows[-1]), *originals.shape[1:]), np.float32)
            rows[-2], rows[-1] = np.concatenate([rows[-2], pad]), np.concatenate([rows[-1], pad])
    return image_grid(np.concatenate(rows), columns)


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile images (N, H, W), (N, H, W, C) or (N, C, H, W) into one uint8 picture.
    Values in [0, 1] map to 0..255; anything else is min-max scaled first."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4 and is_channels_first(images.shape[1:]):
        images = np.moveaxis(images, 1, -1)  # (N, C, H, W) -> (N, H, W, C)
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        images = (images - low) / max(high - low, 1e-12)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n, h, w = images.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    gap = 2
    grid = np.zeros((rows * (h + gap) + gap, columns * (w + gap) + gap, *images.shape[3:]))
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        grid[top : top + h, left : left + w] = image
    return np.round(grid * 255).astype(np.uint8)


def check_writable(path: str | Path) -> None:
    """Fail now, before any work, if `path` could not be written."""
    os.unlink(_temporary_beside(Path(path)))


def _temporary_beside(path: Path) -> str:
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    import tempfile  # here, not at the top: its import is 2% of `vae-edge score`'s start

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{path}: cannot write in {path.parent} ({e.strerror})") from None
    os.close(fd)
    return tmp


def umask() -> int:
    """The process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
