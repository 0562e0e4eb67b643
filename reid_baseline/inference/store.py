"""The feature store of an image folder: a memory-mapped features file built resumably.

A store is a folder a query memory-maps instead of loading:
  manifest.json      what the store holds ("written_by": PRODUCER, count, dim, dtype, the
                     params file and its SHA-256, the skipped files, the approximate index)
  features.npy       (count, dim) float32 or float16, written row by row as computed
  paths.txt          the image of each row, one UTF-8 path a line
  path_offsets.npy   (count + 1,) int64 byte offsets of the lines (a query reads only its hits)
  config.yaml        the config the features were computed with
  progress.json      only while building: how far it got (a new build resumes from it)
Building streams: each chunk of images is embedded, written into the memory map and recorded
in progress.json, so memory stays bounded by the chunk and a stopped build loses one chunk at
most. The rows are a function of the images and the network only, so a resumed build writes
the same files as an uninterrupted one. The optional approximate (faiss) index lives in
approximate.py.
"""
import hashlib
import json
import os

import numpy as np

from ..errors import DatasetError, OutputError
from ..fileio import LOCK_FILE, PRODUCER, atomic_path, lock_folder, read_json_object, unlock_folder
from ..progress import progress_bar

STORE_FORMAT = "reid_baseline feature store"
MANIFEST, FEATURES, PATHS, OFFSETS = "manifest.json", "features.npy", "paths.txt", "path_offsets.npy"
CONFIG, PROGRESS = "config.yaml", "progress.json"
STORE_FILES = (MANIFEST, FEATURES, PATHS, OFFSETS, CONFIG, PROGRESS, "approximate.faiss")
DTYPES = ("float32", "float16")
CHUNK_IMAGES = 2048  # images per extraction call: a stop loses at most this much work


def _write_json(path, data):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def is_store(folder):
    """True when `folder` holds a store manifest the package wrote."""
    manifest = read_json_object(os.path.join(folder, MANIFEST))
    return bool(manifest) and manifest.get("written_by") == PRODUCER \
        and manifest.get("format") == STORE_FORMAT


def check_store_output(folder, overwrite=False):
    """Check, before any work starts, that `folder` can receive a store: it does not exist yet
    (its parent does), is empty, or is a store the package wrote; else an OutputError naming
    it (a file, or a folder holding other files, is replaced only with `overwrite`)."""
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise OutputError("index folder %s: folder %s does not exist" % (folder, parent))
    if os.path.lexists(folder) and not os.path.isdir(folder):
        if not overwrite:
            raise OutputError("index folder %s is a file that %s did not write (an index is a "
                              "folder); choose another name or pass --overwrite"
                              % (folder, PRODUCER))
    elif os.path.isdir(folder) and set(os.listdir(folder)) - {LOCK_FILE} \
            and not is_store(folder) and not overwrite:
        raise OutputError("index folder %s holds files that %s did not write; choose another "
                          "name or pass --overwrite" % (folder, PRODUCER))
    return folder


def build_store(folder, paths, embed, config_text, params_path, params_sha256,
                dtype="float32", overwrite=False, source=None, chunk=None):
    """Write the store of `paths` into `folder`, resuming an interrupted build of the same
    inputs (same paths, config, params and dtype); returns the manifest.

    `embed(paths)` gives (float32 features (n, dim), the paths it could read, [(path, reason)]
    for the others); it is called on chunks of CHUNK_IMAGES paths in order."""
    if dtype not in DTYPES:
        raise OutputError("index dtype must be one of %s, got %r" % (DTYPES, dtype))
    check_store_output(folder, overwrite)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        os.remove(folder)  # a file, and --overwrite
    os.makedirs(folder, exist_ok=True)
    lock_folder(folder, OutputError, "index folder")  # a second builder is refused, PID named
    try:
        return _build_store(folder, paths, embed, config_text, params_path, params_sha256,
                            dtype, source, chunk)
    finally:
        unlock_folder(folder)


def _build_store(folder, paths, embed, config_text, params_path, params_sha256, dtype, source,
                 chunk):
    chunk = int(chunk or CHUNK_IMAGES)
    listing = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
    inputs = {"listing_sha256": listing, "listed": len(paths), "params_sha256": params_sha256,
              "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
              "dtype": dtype, "chunk": chunk}
    at = os.path.join
    progress = read_json_object(at(folder, PROGRESS))
    old = read_json_object(at(folder, MANIFEST)) or {}
    if not (progress and old.get("inputs") == inputs and os.path.isfile(at(folder, FEATURES))):
        progress = None
        for name in STORE_FILES:  # ours (checked above) or --overwrite
            if os.path.lexists(at(folder, name)):
                os.remove(at(folder, name))
    manifest = {"written_by": PRODUCER, "format": STORE_FORMAT, "version": 1,
                "complete": False, "inputs": inputs, "source": source,
                "params": os.path.abspath(params_path) if params_path else None,
                "params_sha256": params_sha256, "dtype": dtype}
    if progress is None:
        with atomic_path(at(folder, CONFIG)) as tmp, open(tmp, "w") as f:
            f.write(config_text)
        _write_json(at(folder, MANIFEST), manifest)
        open(at(folder, PATHS), "wb").close()
        progress = {"next": 0, "rows": 0, "paths_bytes": 0, "dim": None, "skipped": []}
    features = None
    if progress["dim"] is not None:
        features = np.lib.format.open_memmap(at(folder, FEATURES), mode="r+")
    bar = progress_bar(total=len(paths), initial=progress["next"], desc="index", unit="img",
                       leave=True)
    with open(at(folder, PATHS), "r+b") as path_file:
        path_file.truncate(progress["paths_bytes"])  # lines of a chunk that was not recorded
        path_file.seek(progress["paths_bytes"])
        for a in range(progress["next"], len(paths), chunk):
            some = list(paths[a:a + chunk])
            broken = [p for p in some if "\n" in p or "\r" in p]  # one line per stored path
            rest = [p for p in some if p not in broken]
            feats, kept, skipped = embed(rest) if rest else (None, [], [])
            skipped = [(p, "%r: a file name with a line break cannot be stored in an index"
                        % p) for p in broken] + list(skipped)
            if len(kept) and features is None:
                progress["dim"] = int(feats.shape[1])
                features = _reserved_features(at(folder, FEATURES), dtype,
                                              (len(paths), progress["dim"]))
            rows = progress["rows"]
            if len(kept):
                features[rows:rows + len(kept)] = feats
                features.flush()
            lines = "".join(_path_line(p) for p in kept).encode("utf-8", "surrogateescape")
            path_file.write(lines)
            path_file.flush()
            os.fsync(path_file.fileno())
            progress.update(next=min(a + chunk, len(paths)), rows=rows + len(kept),
                            paths_bytes=progress["paths_bytes"] + len(lines))
            progress["skipped"] += [list(s) for s in skipped]
            _write_json(at(folder, PROGRESS), progress)
            bar.update(progress["next"] - a)
    bar.close()
    del features
    if progress["rows"] == 0:
        first = progress["skipped"][0][1] if progress["skipped"] else "no files"
        raise DatasetError("none of the %d image files could be read; the first: %s"
                           % (len(paths), first))
    _finish(folder, progress, len(paths))
    manifest.update(complete=True, count=progress["rows"], dim=progress["dim"],
                    skipped=progress["skipped"])
    _write_json(at(folder, MANIFEST), manifest)
    os.remove(at(folder, PROGRESS))
    return manifest


def _reserved_features(path, dtype, shape):
    """The memory map of a new features file, its disk space reserved first (writing a map past
    a full disk kills the process); no room is one OutputError and leaves no file."""
    header = _npy_header(np.dtype(dtype), shape)
    size = len(header) + int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        with open(path, "wb") as f:
            f.write(header)
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as exc:
        if os.path.lexists(path):
            os.remove(path)
        raise OutputError("%s: no room for the index's features (%d bytes): %s; free space "
                          "and run the same index command again to resume"
                          % (path, size, exc.strerror or exc)) from exc
    return np.lib.format.open_memmap(path, mode="r+")


def _path_line(path):
    if "\n" in path or "\r" in path:
        raise DatasetError("%r: a path with a line break cannot be stored in an index" % path)
    return path + "\n"


def _finish(folder, progress, capacity):
    """Cut features.npy to the rows written (rewriting its header: numpy leaves room in it for
    a longer first dimension) and write the paths' line offsets."""
    rows, dim = progress["rows"], progress["dim"]
    path = os.path.join(folder, FEATURES)
    if rows < capacity:
        mm = np.lib.format.open_memmap(path, mode="r")
        offset, dtype = mm.offset, mm.dtype
        del mm
        header = _npy_header(dtype, (rows, dim))
        if len(header) != offset:
            raise OutputError("%s: cannot shrink the array header" % path)
        with open(path, "r+b") as f:
            f.write(header)
            f.truncate(offset + rows * dim * dtype.itemsize)
    offsets = np.zeros(rows + 1, np.int64)
    with open(os.path.join(folder, PATHS), "rb") as f:
        for i, line in enumerate(f):
            offsets[i + 1] = offsets[i] + len(line)
    with atomic_path(os.path.join(folder, OFFSETS)) as tmp, open(tmp, "wb") as f:
        np.save(f, offsets, allow_pickle=False)


def _npy_header(dtype, shape):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


class FeatureStore(object):
    """A store opened for queries: `features` is a read-only memory map (count, dim); `path(i)`
    reads one row's image path; `config_text`, `params`, `params_sha256`, `manifest`."""

    def __init__(self, folder):
        self.folder = folder
        at = lambda name: os.path.join(folder, name)  # noqa: E731
        manifest = read_json_object(at(MANIFEST))
        if not manifest or manifest.get("format") != STORE_FORMAT:
            raise DatasetError("gallery %s is not an index folder written by %s (no valid %s)"
                               % (folder, PRODUCER, MANIFEST))
        if not manifest.get("complete"):
            raise DatasetError("gallery %s is an unfinished index (its build stopped); run "
                               "the same index command again to resume it" % folder)
        damaged = ("gallery %s is a damaged index (%%s); build it again"
                   % os.fspath(folder).replace("%", "%%"))
        for key, kind in {"count": int, "dim": int, "dtype": str, "inputs": dict}.items():
            if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
                raise DatasetError(damaged % ("its %s field %s is %r" % (MANIFEST, key,
                                                                         manifest.get(key))))
        try:
            self.features = np.load(at(FEATURES), mmap_mode="r", allow_pickle=False)
            self._offsets = np.load(at(OFFSETS), mmap_mode="r", allow_pickle=False)
            with open(at(CONFIG), encoding="utf-8") as f:
                self.config_text = f.read()
            size = os.path.getsize(at(PATHS))
        except (OSError, ValueError, MemoryError, OverflowError) as exc:
            raise DatasetError(damaged % exc) from exc
        shape = (manifest["count"], manifest["dim"])
        offsets = self._offsets
        if (self.features.shape != shape or str(self.features.dtype) != manifest["dtype"]
                or offsets.shape != (shape[0] + 1,) or offsets.dtype != np.int64
                or offsets[-1] != size or offsets[0] != 0 or (np.diff(offsets) < 1).any()):
            raise DatasetError(damaged % ("features %s %s, %s path offsets %s, manifest %s %s"
                                          % (self.features.shape, self.features.dtype,
                                             offsets.shape, offsets.dtype, shape,
                                             manifest["dtype"])))
        self._offsets = np.array(offsets)
        recorded = manifest["inputs"].get("config_sha256")
        if hashlib.sha256(self.config_text.encode()).hexdigest() != recorded:
            # Queries are embedded with this config: an edited one would give other features.
            raise DatasetError(damaged % ("its %s differs from the one it was built with"
                                          % CONFIG))
        self.manifest = manifest
        self.params, self.params_sha256 = manifest.get("params"), manifest.get("params_sha256")
        self.config_path = at(CONFIG)
        self.approximate_index = None  # the faiss index, once approximate.py has read it

    def __len__(self):
        return len(self.features)

    def update_manifest(self, key, value):
        """Set `key` of the store's manifest to `value` (written atomically)."""
        self.manifest[key] = value
        _write_json(os.path.join(self.folder, MANIFEST), self.manifest)

    def paths(self, indices):
        """The image paths of the rows `indices` (any shape), as a nested list."""
        indices = np.asarray(indices, dtype=np.int64)
        found = []
        with open(os.path.join(self.folder, PATHS), "rb") as f:
            for i in indices.ravel():
                f.seek(self._offsets[i])
                line = f.read(self._offsets[i + 1] - self._offsets[i] - 1)
                found.append(line.decode("utf-8", "surrogateescape"))
        return np.array(found + [None], dtype=object)[:-1].reshape(indices.shape).tolist()


def open_gallery(path):
    """The FeatureStore of the index folder `path`; DatasetError naming it when it does not
    exist, is not an index folder or is damaged."""
    if not os.path.lexists(path):
        raise DatasetError("gallery %s does not exist" % path)
    if not os.path.isdir(path):
        raise DatasetError("gallery %s is a file; an index is a folder written by search.py "
                           "index" % path)
    return FeatureStore(path)
