"""reid_baseline.data.images: the one image reader, its limits and the file checks."""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from reid_baseline.data.images import (
    MAX_IMAGE_PIXELS,
    check_image_files,
    image_size,
    read_image,
)
from reid_baseline.errors import DatasetError


def _png_header_only(path, width, height):
    """A small PNG file whose header says width x height (its pixel data is a few bytes)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 1000)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data)
                + chunk(b"IEND", b""))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_image_size_is_read_from_the_header(ext):
    img = np.zeros((37, 53, 3), np.uint8)
    buf = cv2.imencode(ext, img)[1].tobytes()
    assert image_size(buf) == (53, 37)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("side", [30000, 40000])
def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, side):
    path = str(tmp_path / "huge.png")
    _png_header_only(path, side, side)
    assert os.path.getsize(path) < 10000 and side * side > MAX_IMAGE_PIXELS
    with pytest.raises(DatasetError, match="huge.png.*MAX_IMAGE_PIXELS"):
        read_image(path)


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    path = os.path.join(str(tmp_path), os.fsdecode(b"p\xff#?.png"))
    with open(path, "wb") as f:
        f.write(cv2.imencode(".png", np.full((8, 4, 3), 7, np.uint8))[1].tobytes())
    assert read_image(path).shape == (8, 4, 3)


@pytest.mark.timeout(10)
def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    fifo = str(tmp_path / "pipe.jpg")
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match="pipe.jpg: not a regular file"):
        read_image(fifo)
    with pytest.raises(DatasetError, match="pipe.jpg: not a regular file"):
        check_image_files([fifo], str(tmp_path))
