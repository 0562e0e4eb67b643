"""Your own data -> (path, pid, camid) records, in one of two forms.

Folders: ``train/``, ``query/`` and ``gallery/`` holding images named
``<pid>_c<cam>_<anything>.<jpg|jpeg|png|bmp>``, e.g. ``17_c3_frame0042.jpg``. Or a CSV list file with the
header row ``path,pid,camid,split`` (split: train, query or gallery; paths relative to the list
file, staying under its folder unless ``allow_outside_root``: DATASETS.ALLOW_OUTSIDE_ROOT;
each image listed once; UTF-8). Ids and cameras are any integers. Every id is a person (there
is no junk or distractor id); query and gallery ids are renumbered 0..M-1 in sorted order (``test_pids[i]`` is the
original of i) so that no id takes the evaluation's junk meaning (-1). Train and test ids are
separate numberings (the same number in both is not checked as a leak).
"""
import csv
import io
import os
import re

from ..images import IMAGE_EXTENSIONS
from .base import SPLITS, DatasetError, Record, ReIDDataset, split_image_names

CSV_HEADER = ["path", "pid", "camid", "split"]
FILENAME_PATTERN = "<pid>_c<cam>_<anything>.<jpg|jpeg|png|bmp> (e.g. 17_c3_frame0042.jpg)"
_NAME_RE = re.compile(r"^([-+]?\d+)_c([-+]?\d+)_.*$", re.IGNORECASE)
_PID_RE = re.compile(r"^[-+]?\d+_")
_COLUMN_RE = re.compile(r"^[A-Za-z][\w ]{0,30}$")


def parse_filename(path):
    """``(pid, camid)`` of a file named ``<pid>_c<cam>_<anything>.<ext>``."""
    name = os.path.basename(path)
    match = _NAME_RE.match(os.path.splitext(name)[0] + "_")  # "_<anything>" may be empty
    if match is None:
        what = ("no camera field c<cam> after the id" if _PID_RE.match(name)
                else "does not start with an integer id")
        raise DatasetError("%s: %s; expected %s" % (path, what, FILENAME_PATTERN))
    return int(match.group(1)), int(match.group(2))


def _read_folders(root):
    records = {}
    for split in SPLITS:
        folder = os.path.join(root, split)
        records[split] = [Record(os.path.join(folder, n), *parse_filename(os.path.join(folder, n)))
                          for n in split_image_names(folder, IMAGE_EXTENSIONS)]
    return records, {split: os.path.join(root, split) for split in SPLITS}


def _int(text, path, number, column):
    try:
        return int(text)
    except ValueError:
        raise DatasetError("%s, line %d: %s must be an integer, got %r"
                           % (path, number, column, text)) from None


def _decode(path):
    """The text of the list file `path` (UTF-8, with or without Excel's BOM); bytes that are
    not UTF-8 are a DatasetError naming the line."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError("%s, line %d: not UTF-8 text (byte %d of the line); save the list as "
                           "UTF-8" % (path, data[:exc.start].count(b"\n") + 1,
                                      exc.start - data.rfind(b"\n", 0, exc.start))) from exc


def _image_path(cell, folder, path, number, allow_outside_root):
    """The absolute, normalised path of a list's `cell` (relative to `folder`)."""
    if "\0" in cell:
        raise DatasetError("%s, line %d: the path holds a NUL character" % (path, number))
    full = os.path.normpath(os.path.join(folder, cell))
    if not allow_outside_root and os.path.commonpath([folder, full]) != folder:
        raise DatasetError("%s, line %d: the path leads outside the list's folder %s; give a "
                           "path under it (or set DATASETS.ALLOW_OUTSIDE_ROOT True)"
                           % (path, number, folder))
    return full


def read_csv(path, allow_outside_root=False):
    """{split: [Record]} of a CSV list file; a bad header, split value, id or camera, text that
    is not UTF-8, a path outside the list's folder (unless `allow_outside_root`) or an image
    listed twice is a DatasetError naming the file and the line(s)."""
    records = {split: [] for split in SPLITS}
    folder = os.path.dirname(os.path.abspath(path))
    rows = csv.reader(io.StringIO(_decode(path), newline=""))
    first_line = {}
    try:
        header = [h.strip() for h in next(rows, [])]
        if header != CSV_HEADER:
            # The cells are shown only if they look like column names: never a file's content.
            got = (",".join(header) if all(_COLUMN_RE.match(h) for h in header)
                   else "a line that is not a header row (%d values)" % len(header))
            raise DatasetError("%s, line 1: expected the header row %s, got %s"
                               % (path, ",".join(CSV_HEADER), got or "nothing"))
        for row in rows:
            number = rows.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 4 or not row[0].strip():
                raise DatasetError("%s, line %d: expected 4 values path,pid,camid,split, got %d"
                                   % (path, number, len(row)))
            split = row[3].strip()
            if split not in SPLITS:
                raise DatasetError("%s, line %d: split must be train, query or gallery, got %r"
                                   % (path, number, split))
            image = _image_path(row[0].strip(), folder, path, number, allow_outside_root)
            if image in first_line:
                raise DatasetError("%s, lines %d and %d: the same image %s is listed twice"
                                   % (path, first_line[image], number, row[0].strip()))
            first_line[image] = number
            records[split].append(Record(image, _int(row[1], path, number, "pid"),
                                         _int(row[2], path, number, "camid")))
    except csv.Error as exc:
        raise DatasetError("%s, line %d: not a CSV row (%s)" % (path, rows.line_num, exc)) from exc
    return records


def load_folder(root, verify_counts=True, allow_outside_root=False):
    """Load your own data from a folder holding ``train/ query/ gallery/`` or from a CSV list
    file (see the module doc; `allow_outside_root`: a list may name images outside its
    folder). `verify_counts` is accepted for the registry's sake: there are no official
    counts. At least 2 training identities are needed."""
    del verify_counts  # no official counts for your own data
    root = os.path.abspath(os.path.expanduser(str(root)))
    if os.path.isfile(root):
        records, where = read_csv(root, allow_outside_root), dict.fromkeys(SPLITS, root)
    elif os.path.isdir(root):
        if not all(os.path.isdir(os.path.join(root, s)) for s in SPLITS):
            raise DatasetError("%s: expected sub-folders train/, query/, gallery/ (or give a CSV "
                               "list file path,pid,camid,split instead of a folder)" % root)
        records, where = _read_folders(root)
    else:
        raise DatasetError("%s: no such folder or CSV list file" % root)
    if len({r.pid for r in records["train"]}) < 2:
        raise DatasetError("%s: the train split has %d identities; at least 2 are needed to "
                           "train a classifier" % (where["train"], len(
                               {r.pid for r in records["train"]})))
    # Checked here, before the renumbering below, so the message names the user's own ids.
    missing = sorted({r.pid for r in records["query"]} - {r.pid for r in records["gallery"]})
    if missing:
        raise DatasetError("%s: %d query identities have no image in the gallery: %s"
                           % (where["query"], len(missing), missing[:10]))
    test_pids = sorted({r.pid for r in records["query"] + records["gallery"]})
    new = {pid: i for i, pid in enumerate(test_pids)}
    query, gallery = ([r._replace(pid=new[r.pid]) for r in records[s]]
                      for s in ("query", "gallery"))
    dataset = ReIDDataset("your data", root, records["train"], query, gallery, where,
                          min_train_pid=None, disjoint_ids=False, camera_offset=0)
    dataset.test_pids = test_pids
    return dataset
