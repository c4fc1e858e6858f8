"""Data readers: every supported format, and one clear error for each broken file."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vae_edge.runtime.data import image_grid, read_data, read_input
from vae_edge.runtime.errors import InputError


def test_npz_with_x_and_labels(tmp_path):
    x, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = read_data(tmp_path / "d.npz")
    assert np.array_equal(data.x, x) and np.array_equal(data.y, y) and data.x_test is None
    assert np.array_equal(read_input(tmp_path / "d.npz"), x)


def test_npz_with_train_and_test_splits(tmp_path):
    a, b = np.zeros((5, 2, 2), np.uint8), np.ones((3, 2, 2), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=a, y_train=np.arange(5), x_test=b, y_test=np.arange(3))
    data = read_data(tmp_path / "d.npz")
    assert data.x.shape == (5, 2, 2) and data.x_test.shape == (3, 2, 2)
    assert np.array_equal(read_input(tmp_path / "d.npz"), b)  # scoring reads the test split


def test_npz_without_known_keys(tmp_path):
    np.savez(tmp_path / "d.npz", data=np.zeros(3))
    with pytest.raises(InputError, match="no 'x', 'x_train' or 'x_test' array \\(has: data\\)"):
        read_data(tmp_path / "d.npz")


def test_npz_with_mismatched_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(InputError, match="3 labels for 4 samples"):
        read_data(tmp_path / "d.npz")


def test_npy(tmp_path):
    np.save(tmp_path / "d.npy", np.eye(3))
    assert np.array_equal(read_input(tmp_path / "d.npy"), np.eye(3))


def test_npy_with_pickled_objects_is_refused(tmp_path):
    np.save(tmp_path / "d.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickle"):
        read_input(tmp_path / "d.npy")


@pytest.mark.parametrize("name, content", [("d.npy", b"garbage"), ("d.npz", b"PK\x03\x04junk")])
def test_corrupt_numpy_files(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=f"{name}: not a valid"):
        read_input(tmp_path / name)


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / "b.csv").write_text("f1,f2,f3\n1,2,3\n4,5,6\n")
    assert np.array_equal(read_input(tmp_path / "a.csv"), [[1, 2, 3], [4, 5, 6]])
    assert np.array_equal(read_input(tmp_path / "b.csv"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "one.csv").write_text("1,2,3\n")
    assert read_input(tmp_path / "one.csv").shape == (1, 3)


def test_csv_with_text_cells(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3\n4,five,6\n")
    with pytest.raises(InputError, match="d.csv: .*five.*only numbers are accepted"):
        read_input(tmp_path / "d.csv")


@pytest.mark.parametrize("content", ["", "a,b,c\n"])
def test_csv_without_data(tmp_path, content):
    (tmp_path / "d.csv").write_text(content)
    with pytest.raises(InputError, match="d.csv: (empty CSV file|no data rows)"):
        read_input(tmp_path / "d.csv")


def test_png_file_and_folder(tmp_path):
    img = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    for i in range(3):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    assert np.array_equal(read_input(tmp_path / "0.png"), img[None])
    folder = read_input(tmp_path)
    assert folder.shape == (3, 28, 28) and np.array_equal(folder[2], img)


def test_png_folder_with_mixed_sizes(tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((20, 28), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(InputError, match="differ in size"):
        read_input(tmp_path)


def test_corrupt_png_and_empty_folder(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(InputError, match="bad.png: not a readable PNG"):
        read_input(tmp_path / "bad.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .png files"):
        read_input(tmp_path / "empty")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        read_input(tmp_path / "nope.npy")
    (tmp_path / "d.txt").write_text("1")
    with pytest.raises(InputError, match="unsupported file type"):
        read_input(tmp_path / "d.txt")


def test_image_grid_tiles_images():
    grid = image_grid(np.ones((5, 4, 3)))
    assert grid.dtype == np.uint8 and grid.shape == (2 * 6 + 2, 3 * 5 + 2)
    assert grid[2:6, 2:5].min() == 255 and grid[0].max() == 0


def test_image_grid_takes_channels_first_and_last():
    rgb = np.random.default_rng(0).random((4, 3, 8, 8))
    first = image_grid(rgb)
    last = image_grid(np.moveaxis(rgb, 1, -1))
    assert first.shape == (2 * 10 + 2, 2 * 10 + 2, 3) and np.array_equal(first, last)


cells = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["", "x", "1e", "nan", " 3 ", "--1"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(cells, min_size=1, max_size=4), min_size=0, max_size=6))
def test_csv_reader_gives_a_numeric_array_or_the_documented_error(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("".join(",".join(row) + "\n" for row in rows))
    try:
        x = read_input(path)
    except InputError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return
    assert x.ndim == 2 and x.dtype == np.float64 and len(x) >= 1


def test_csv_with_a_missing_value(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3\n4,,6\n")
    with pytest.raises(InputError, match="d.csv: line 2, column 2: missing value"):
        read_input(tmp_path / "d.csv")


def test_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbf1,2\n3,4\n")
    assert np.array_equal(read_input(tmp_path / "d.csv"), [[1, 2], [3, 4]])
