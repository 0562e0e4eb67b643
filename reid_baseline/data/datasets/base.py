"""What every data set layout shares: records, errors and the loaded data set.

A layout module parses its own folders or list files into (path, pid, camid) records and
hands them to :class:`ReIDDataset`, which relabels the training identities, checks the
query/gallery structure and the official counts, and checks every image file cheaply
(check_image_files of data/images.py).
"""
import collections
import os

from ...errors import DatasetError
from ..images import check_image_files

Record = collections.namedtuple("Record", "path pid camid")

JUNK_PID = -1  # the evaluation ignores gallery images with this id (Market-1501's junk)
DISTRACTOR_PID = 0  # Market-1501's distractors; other sets have no such id
SPLITS = ("train", "query", "gallery")


def find_root(root, official_names, is_root, expected, title):
    """The folder that holds a data set: `root` itself or `root/<name>` for a name in
    `official_names`, whichever `is_root` accepts first; else a DatasetError saying what
    was `expected` and what `root` holds."""
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise DatasetError("%s: dataset folder does not exist" % root)
    for candidate in [root] + [os.path.join(root, name) for name in official_names]:
        if is_root(candidate):
            return candidate
    found = sorted(os.listdir(root))
    found = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "") if found else "nothing"
    raise DatasetError("%s: not a %s folder: expected %s (or a sub-folder %s holding them); "
                       "found %s" % (root, title, expected, " or ".join(
                           n + "/" for n in official_names), found))


def split_image_names(folder, extensions=(".jpg",)):
    """Sorted names of the files directly in the split folder `folder` that end with one of
    `extensions` (any case); a missing folder or one without such files is a DatasetError."""
    if not os.path.isdir(folder):
        raise DatasetError("%s: split folder does not exist" % folder)
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(extensions))
    if not names:
        raise DatasetError("%s: no %s images found in this split folder"
                           % (folder, " or ".join(extensions)))
    return names


def relabel_records(records, min_pid=1):
    """Map pids to 0..N-1 in sorted order of the original pid (needed by a softmax classifier).

    Returns ``(new_records, original_pids)`` where ``original_pids[new] == old``. A pid below
    `min_pid` (Market-1501: 0 distractor, -1 junk; None: any integer) is a DatasetError.
    """
    for rec in records:
        if min_pid is not None and rec.pid < min_pid:
            # a classifier has no class for "not a person" / "bad box"
            raise DatasetError("%s: id %d (junk/distractor) in a training split; training "
                               "identities must be >= %d" % (rec.path, rec.pid, min_pid))
    original = sorted({rec.pid for rec in records})
    index = {pid: i for i, pid in enumerate(original)}
    return [rec._replace(pid=index[rec.pid]) for rec in records], original


class ReIDDataset(object):
    """A loaded data set: ``train`` (ids relabelled 0..N-1; ``train_pids[i]`` is class i's
    original id), ``query``, ``gallery``, ``num_train_pids``, ``root``, ``summary()``.

    `where` maps each split to the folder or list file it came from (for messages). Checks,
    in order: every query identity has gallery images; with `distractor_pid`, no distractor
    in the query; with `disjoint_ids` (train and test ids share one numbering), no training
    identity among the test ones; with `verify_counts`, the `expected` counts
    ({split: {"images": n, "ids": n, ...}}); and every image file (:func:`check_image_files`).
    ``camid + camera_offset`` is the camera as the file names number it, for display: the
    official sets store c1 as camid 0 (offset 1); your own data keeps its numbers (offset 0).
    """

    def __init__(self, title, root, train, query, gallery, where, expected=None,
                 verify_counts=True, min_train_pid=1, distractor_pid=None, disjoint_ids=True,
                 junk_files=0, camera_offset=1):
        self.title, self.root, self.where = title, root, where
        self.train, self.train_pids = relabel_records(train, min_train_pid)
        self.query, self.gallery = query, gallery
        self.num_train_pids = len(self.train_pids)
        self.distractor_pid, self.junk_files = distractor_pid, junk_files
        self.camera_offset = camera_offset
        self._check_structure(disjoint_ids)
        if verify_counts and expected:
            self._verify_counts(expected)
        # A damaged file would otherwise surface only when first read, e.g. at the first
        # evaluation after hours of training.
        check_image_files([r.path for r in self.train + self.query + self.gallery], self.root)

    def _check_structure(self, disjoint_ids):
        # Evaluation needs every query identity in the gallery, and test identities
        # must not leak into training.
        for split in SPLITS:
            if not getattr(self, split):
                raise DatasetError("%s: the %s split has no images" % (self.where[split], split))
        gallery_ids = {r.pid for r in self.gallery}
        query_ids = {r.pid for r in self.query}
        missing = sorted(query_ids - gallery_ids)
        if missing:
            raise DatasetError("%s: %d query identities have no image in the gallery %s: %s"
                               % (self.where["query"], len(missing), self.where["gallery"],
                                  missing[:10]))
        if self.distractor_pid is not None and self.distractor_pid in query_ids:
            raise DatasetError("%s: distractor images (id %04d) in the query split"
                               % (self.where["query"], self.distractor_pid))
        leaked = sorted(set(self.train_pids) & (gallery_ids | query_ids)) if disjoint_ids else []
        if leaked:
            raise DatasetError("%s: %d training identities also appear in the test splits: %s"
                               % (self.where["train"], len(leaked), leaked[:10]))

    def stats(self):
        """Dict split -> {"images", "ids", "cameras", "distractors"}; gallery also "junk" and
        "files" (ids never count the distractor or junk ids)."""
        out = {}
        for split in SPLITS:
            records = getattr(self, split)
            pids = {r.pid for r in records}
            distractors = sum(r.pid == self.distractor_pid for r in records)
            out[split] = {"images": len(records), "cameras": len({r.camid for r in records}),
                          "ids": len(pids - {self.distractor_pid, JUNK_PID}),
                          "distractors": distractors}
        # train is relabelled: 0 is a real class there, not a distractor
        out["train"].update(ids=self.num_train_pids, distractors=0)
        out["gallery"].update(junk=self.junk_files, files=len(self.gallery) + self.junk_files)
        return out

    def _verify_counts(self, expected):
        stats, errors = self.stats(), []
        for split, counts in expected.items():
            bad = ["%s %d found %d" % (what, n, stats[split][what])
                   for what, n in counts.items() if stats[split][what] != n]
            if bad:
                errors.append("  %s (%s): expected %s" % (split, self.where[split],
                                                         "; expected ".join(bad)))
        if errors:
            raise DatasetError(
                "%s: does not match the official %s counts (incomplete or corrupted "
                "extraction?):\n%s\nIf this is intentionally a different dataset (e.g. the "
                "generated toy set), disable the check with the config key "
                "DATASETS.VERIFY_COUNTS False (verify_counts=False)."
                % (self.root, self.title, "\n".join(errors)))

    def summary(self):
        """A small text table of identities / images / cameras per split."""
        stats = self.stats()
        lines = ["%s at %s" % (self.title, self.root),
                 "  %-8s %6s %8s %8s" % ("split", "ids", "images", "cameras")]
        for split in SPLITS:
            s = stats[split]
            lines.append("  %-8s %6d %8d %8d" % (split, s["ids"], s["images"], s["cameras"]))
        if self.distractor_pid is not None:
            lines.append("  (ids exclude distractors; gallery also holds %d distractor images "
                         "(id %04d) and %d junk files (id -1, dropped))"
                         % (stats["gallery"]["distractors"], self.distractor_pid,
                            stats["gallery"]["junk"]))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def parse_pid_camera(path, name_re, dataset, pattern, num_cameras):
    """``(pid, camid)`` from the name of `path` matched by `name_re` (group 1 the identity,
    group 2 the 1-based camera); camid is 0-based (c1 -> 0). A name that does not match, or
    a camera outside 1..num_cameras, is a DatasetError naming the file and `dataset`'s
    `pattern`."""
    match = name_re.match(os.path.basename(path))
    if match is None:
        raise DatasetError("%s: file name does not match the %s pattern %s"
                           % (path, dataset, pattern))
    pid, cam = int(match.group(1)), int(match.group(2))
    if not 1 <= cam <= num_cameras:
        raise DatasetError("%s: camera c%d out of range, expected c1..c%d"
                           % (path, cam, num_cameras))
    return pid, cam - 1
