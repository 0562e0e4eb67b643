"""Image files: the one reader of the package (training, evaluation and search all decode
through :func:`read_image`), the cheap check of whole data sets, and finding image files.

Decoding is OpenCV's (what MXNet's ``mx.image.imdecode`` runs underneath) without an MXNet
op, so data-loader worker processes never start MXNet's OpenMP threads.
"""
import os
import stat
import struct

import cv2
import numpy as np

from ..errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # what read_image decodes (any case)

# The most pixels (width x height, from the file's header) an image may have: larger ones are
# refused before decoding, so a small crafted file cannot take gigabytes of memory.
MAX_IMAGE_PIXELS = 50_000_000

# Bytes read from the end of a file for the end-of-image check: room for zero padding.
_TAIL_BYTES = 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_problem(head, tail):
    """What is wrong with a JPEG or PNG file given its first bytes and its last bytes, or None.

    Catches an empty file, a file that is neither a JPEG (start marker FFD8) nor a PNG
    (signature), a truncated JPEG (no end marker FFD9 at the end; zero padding after it is
    allowed) and a truncated PNG (no IEND chunk at the end).
    """
    if not head:
        return "empty file (0 bytes)"
    if head[:8] == _PNG_SIGNATURE:
        # OpenCV decodes a truncated PNG partially too; the last chunk must be IEND.
        if b"IEND" not in tail.rstrip(b"\x00")[-12:]:
            return "truncated PNG (no IEND chunk at the end of the file)"
        return None
    if head[:2] == b"BM":  # BMP: OpenCV refuses a truncated one when decoding
        return None
    if head[:2] != b"\xff\xd8":
        # Its bytes are not shown: the file may be anything (a list may name any path).
        return "not a JPEG (no start marker FFD8), a PNG (no PNG signature) nor a BMP"
    # OpenCV decodes a truncated JPEG partially (grey bottom) without any error, so
    # require the end-of-image marker; some writers pad with zeros after it.
    if b"\xff\xd9" not in tail.rstrip(b"\x00")[-16:]:
        return "truncated JPEG (no end-of-image marker FFD9 at the end of the file)"
    return None


def image_size(head):
    """(width, height) from the header of a PNG, BMP or JPEG file's bytes `head`, or None
    when the header does not say (not one of these, or cut short)."""
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)  # a negative height is a top-down BMP
    if head[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", head[at + 5:at + 9])
            return width, height
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        at += 2 + struct.unpack(">H", head[at + 2:at + 4])[0]
    return None


def _check_regular(path):
    """DatasetError unless `path` is a regular file: a FIFO or a device would block or never
    end when read. A missing file is the OSError of os.stat."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise DatasetError("%s: not a regular file (a FIFO, device or socket); only image files "
                           "are read" % path)


def _read_ends(path):
    _check_regular(path)
    with open(path, "rb", buffering=0) as f:
        head = f.read(8)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _TAIL_BYTES))
        return head, f.read()


def check_image_files(paths, root, show=10):
    """Raise one DatasetError listing every file of `paths` that :func:`image_problem` rejects.

    Reads a few bytes at both ends of each file only (Market-1501's 32k files take well
    under a second with a warm page cache); names are shown relative to `root`.
    """
    bad = []
    for path in paths:
        try:
            problem = image_problem(*_read_ends(path))
        except OSError as err:
            problem = "cannot read the file (%s)" % (err.strerror or err)
        except DatasetError:
            problem = "not a regular file (a FIFO, device or socket)"
        if problem:
            bad.append("%s: %s" % (os.path.relpath(path, root), problem))
    if bad:
        first = "; the first %d:" % show if len(bad) > show else ":"
        raise DatasetError("%s: %d damaged image files (re-extract or re-download the dataset)"
                           "%s %s" % (root, len(bad), first, "; ".join(bad[:show])))


def find_images(folder):
    """Every image file (IMAGE_EXTENSIONS, any case) under `folder` and its sub-folders,
    as sorted paths (folders walked in name order)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def decode_image(buf, name):
    """Decode the image file bytes `buf` as an HWC uint8 RGB array: JPEG, PNG or BMP, refused
    above MAX_IMAGE_PIXELS (from the header, before decoding); DatasetError naming `name`."""
    problem = image_problem(buf[:8], buf[-_TAIL_BYTES:])
    if problem:
        raise DatasetError("%s: %s; re-extract or re-download the dataset" % (name, problem))
    size = image_size(buf[:65536])
    if size and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DatasetError("%s: %d x %d pixels, more than MAX_IMAGE_PIXELS (%d); not decoded"
                           % (name, size[0], size[1], MAX_IMAGE_PIXELS))
    # IMREAD_COLOR applies the EXIF orientation, as MXNet's decoder does.
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise DatasetError("%s: not a decodable image (%d bytes): %s"
                           % (name, len(buf), str(err).strip().splitlines()[-1][:200])) from err
    if img is None or img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise DatasetError("%s: not a decodable image (%d bytes)" % (name, len(buf)))
    if img.shape[0] * img.shape[1] > MAX_IMAGE_PIXELS:
        raise DatasetError("%s: %d x %d pixels, more than MAX_IMAGE_PIXELS (%d)"
                           % (name, img.shape[1], img.shape[0], MAX_IMAGE_PIXELS))
    return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB


def read_image(path):
    """Read an image (JPEG, PNG or BMP) as an HWC uint8 RGB numpy array, with OpenCV: the pixels of
    MXNet's `mx.image.imdecode` (which runs OpenCV underneath) without an MXNet op, so loader
    workers never wait for an OpenMP thread.

    Raises DatasetError naming the file when it is missing, not a regular file, empty, not an
    image, truncated, larger than MAX_IMAGE_PIXELS or not decodable.  The file is read as bytes
    and decoded from memory (OpenCV's own file reading fails on some file names).  Called
    once per sample by the data loader: one read, one decode.
    """
    try:
        _check_regular(path)
        with open(path, "rb") as f:
            buf = f.read()
    except (IOError, OSError) as err:
        raise DatasetError("%s: cannot read image file (%s)" % (path, err)) from err
    return decode_image(buf, path)
