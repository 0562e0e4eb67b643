"""The data set registry and its layouts (DukeMTMC-reID, MSMT17, CUHK03-NP, your own data),
on generated copies of each layout; cross-dataset training and evaluation end to end."""
import csv
import os
import re
import shutil
import sys
import zipfile

import cv2
import pytest

from reid_baseline.config import load_config
from reid_baseline.data.datasets import (
    CrossDataset,
    DatasetError,
    build_datasets,
    load_dataset,
)
from reid_baseline.data.datasets.market1501 import load_market1501
from reid_baseline.data.images import read_image
from reid_baseline.data.toy import make_toy_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_train_ids=4, num_test_ids=3, images_per_id_per_camera=1)
# Where each layout keeps a split's images, relative to make_toy_dataset's out_dir.
SPLIT_FOLDERS = {
    "dukemtmc": {s: "DukeMTMC-reID/" + d for s, d in (("train", "bounding_box_train"),
                                                      ("query", "query"),
                                                      ("gallery", "bounding_box_test"))},
    "msmt17": {"train": "MSMT17_V1/train", "query": "MSMT17_V1/test", "gallery": "MSMT17_V1/test"},
    "cuhk03np": {s: "cuhk03-np/detected/" + d for s, d in (("train", "bounding_box_train"),
                                                          ("query", "query"),
                                                          ("gallery", "bounding_box_test"))},
    "folder": {s: s for s in ("train", "query", "gallery")},
}
OFFICIAL = {"dukemtmc": "expected images 16522 found", "msmt17": "expected images 32621 found",
            "cuhk03np": "expected images 7365 found"}


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory):
    """{name: (out_dir, written images)} of a small generated copy of every layout."""
    base = tmp_path_factory.mktemp("layouts")
    return {name: (str(base / name), make_toy_dataset(name, str(base / name), seed=3, **SMALL))
            for name in SPLIT_FOLDERS}


def expected(name, out_dir, written):
    """{split: {path: (original pid, camera)}} from the generator's own list and file names,
    independently of the parsers: Duke and folder names start with the id (distractors get
    their own ids), MSMT17 keeps each id's images in a folder named by the id."""
    out = {"train": {}, "query": {}, "gallery": {}}
    for split, rel, pid, cam in written:
        path = os.path.join(out_dir, SPLIT_FOLDERS[name][split], rel)
        pid = pid if name == "cuhk03np" else int(re.split(r"[_/]", rel)[0])
        out[split][path] = (pid, cam + 1 if name == "folder" else cam)
    return out


@pytest.mark.parametrize("name", sorted(SPLIT_FOLDERS))
def test_layout_counts_relabelling_cameras(toy_sets, name):
    out_dir, written = toy_sets[name]
    data = load_dataset(name, out_dir, verify_counts=False)
    want = expected(name, out_dir, written)
    train_ids = sorted({pid for pid, _ in want["train"].values()})
    assert data.num_train_pids == len(train_ids) == SMALL["num_train_ids"]
    assert list(data.train_pids) == train_ids
    assert {r.path: (train_ids[r.pid], r.camid) for r in data.train} == want["train"]
    for split in ("query", "gallery"):
        records = getattr(data, split)
        assert {r.path: r.camid for r in records} == {p: c for p, (_, c) in want[split].items()}
        if name == "folder":  # test ids renumbered 0..M-1 in sorted order (test_pids: originals)
            assert {r.path: data.test_pids[r.pid] for r in records} == {
                p: pid for p, (pid, _) in want[split].items()}
        else:
            assert {r.path: r.pid for r in records} == {
                p: pid for p, (pid, _) in want[split].items()}
    query_ids = {pid for pid, _ in want["query"].values()}
    gallery_ids = {pid for pid, _ in want["gallery"].values()}
    assert len(query_ids) == SMALL["num_test_ids"]
    # Duke and your own data keep gallery-only (distractor) identities; the others have none
    assert (len(gallery_ids) > len(query_ids)) == (name in ("dukemtmc", "folder"))
    assert data.stats()["gallery"]["junk"] == 0 and str(len(data.train)) in data.summary()


def test_layout_cameras_as_each_set_has_them(toy_sets):
    cameras = {name: {r.camid for r in load_dataset(name, toy_sets[name][0], False).gallery}
               for name in ("cuhk03np", "msmt17")}
    assert cameras["cuhk03np"] == {0, 1}  # every CUHK03-NP identity is seen by its 2 cameras
    assert max(cameras["msmt17"]) >= 9  # two-digit camera fields (10..15) are read


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_counts_checked(toy_sets, name):
    with pytest.raises(DatasetError) as info:
        load_dataset(name, toy_sets[name][0])
    assert OFFICIAL[name] in str(info.value) and "DATASETS.VERIFY_COUNTS False" in str(info.value)


@pytest.mark.parametrize("name, inside", [("dukemtmc", "DukeMTMC-reID"), ("msmt17", "MSMT17_V1"),
                                          ("cuhk03np", "cuhk03-np/detected"),
                                          ("cuhk03np", "cuhk03-np")])
def test_own_folder_or_parent(toy_sets, name, inside):
    out_dir = toy_sets[name][0]
    own = load_dataset(name, os.path.join(out_dir, inside), False)
    assert own.root == load_dataset(name, out_dir, False).root
    assert own.root == os.path.join(out_dir, *SPLIT_FOLDERS[name]["train"].split("/")[:-1]) \
        if name != "msmt17" else own.root == os.path.join(out_dir, "MSMT17_V1")


def test_msmt17_v2_and_val_list(tmp_path):
    written = make_toy_dataset("msmt17", str(tmp_path), version="MSMT17_V2", seed=1, **SMALL)
    data = load_dataset("msmt17", str(tmp_path), False)
    assert data.root == str(tmp_path / "MSMT17_V2") and data.title == "MSMT17_V2"
    val = open(str(tmp_path / "MSMT17_V2" / "list_val.txt")).read().split()
    assert len(val) > 0 and len(data.train) == sum(w[0] == "train" for w in written)
    assert all(r.path.startswith(str(tmp_path / "MSMT17_V2" / "mask_train_v2")) for r in data.train)
    # train and test ids are separate numberings, both from 0: not a leak
    assert 0 in data.train_pids and 0 in {r.pid for r in data.query}


def _copy(toy_sets, name, tmp_path):
    out = str(tmp_path / name)
    shutil.copytree(toy_sets[name][0], out)
    return out


def test_dukemtmc_bad_names(toy_sets, tmp_path):
    out = _copy(toy_sets, "dukemtmc", tmp_path)
    query = os.path.join(out, "DukeMTMC-reID", "query")
    first = sorted(os.listdir(query))[0]
    os.rename(os.path.join(query, first), os.path.join(query, "0001_c9_f0000001.jpg"))
    with pytest.raises(DatasetError, match=r"0001_c9_f0000001\.jpg: camera c9 out of range, "
                                           r"expected c1\.\.c8"):
        load_dataset("dukemtmc", out, False)
    os.rename(os.path.join(query, "0001_c9_f0000001.jpg"), os.path.join(query, "0001_c1s1.jpg"))
    with pytest.raises(DatasetError, match=r"0001_c1s1\.jpg: .*DukeMTMC-reID pattern"):
        load_dataset("dukemtmc", out, False)


@pytest.mark.parametrize("line, what", [
    ("0000/0000_000_01_0303morning_0015_0.jpg", "expected <path> <pid>"),
    ("0000/0000_000_01_0303morning_0015_0.jpg x", "expected <path> <pid>"),
    ("0000/0000_000_16_0303morning_0015_0.jpg 0", "no camera 01..15"),
    ("0000/0000.jpg 0", "no camera 01..15"),
])
def test_msmt17_bad_list_lines(toy_sets, tmp_path, line, what):
    out = _copy(toy_sets, "msmt17", tmp_path)
    path = os.path.join(out, "MSMT17_V1", "list_gallery.txt")
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(lines[:2] + [line] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=re.escape(path) + ", line 3: .*" + re.escape(what)):
        load_dataset("msmt17", out, False)


def test_msmt17_missing_list_and_image(toy_sets, tmp_path):
    out = _copy(toy_sets, "msmt17", tmp_path)
    first = open(os.path.join(out, "MSMT17_V1", "list_query.txt")).readline().split()[0]
    os.remove(os.path.join(out, "MSMT17_V1", "test", first))
    with pytest.raises(DatasetError, match=re.escape(first) + ": cannot read the file"):
        load_dataset("msmt17", out, False)
    os.remove(os.path.join(out, "MSMT17_V1", "list_val.txt"))
    with pytest.raises(DatasetError, match="not a MSMT17 folder.*list_val.txt"):
        load_dataset("msmt17", out, False)


def test_cuhk03np_subsets_and_png_checks(toy_sets, tmp_path):
    out = _copy(toy_sets, "cuhk03np", tmp_path)
    labeled = os.path.join(out, "cuhk03-np", "labeled")
    shutil.copytree(os.path.join(out, "cuhk03-np", "detected"), labeled)
    assert load_dataset("cuhk03np", out, False, subset="labeled").root == labeled
    with pytest.raises(DatasetError, match="labeled subset but the detected one.*CUHK03_SUBSET"):
        load_dataset("cuhk03np", labeled, False, subset="detected")
    with pytest.raises(DatasetError, match="expected images 7368 found"):  # labeled's counts
        load_dataset("cuhk03np", labeled, subset="labeled")
    folder = os.path.join(labeled, "bounding_box_test")
    name = sorted(os.listdir(folder))[0]
    data = open(os.path.join(folder, name), "rb").read()
    open(os.path.join(folder, name), "wb").write(data[:len(data) // 2])
    with pytest.raises(DatasetError, match=re.escape(name) + ": truncated PNG"):
        load_dataset("cuhk03np", labeled, False, subset="labeled")
    with pytest.raises(DatasetError, match="truncated PNG"):
        read_image(os.path.join(folder, name))
    png = os.path.join(out, "cuhk03-np", "detected", "query", sorted(os.listdir(
        os.path.join(out, "cuhk03-np", "detected", "query")))[0])
    assert (read_image(png) == cv2.imread(png)[:, :, ::-1]).all()


# ---------------------------------------------------------------- your own data
def _write_csv(path, rows, header="path,pid,camid,split"):
    with open(path, "w", newline="") as f:
        f.write(header + "\n")
        csv.writer(f).writerows(rows)
    return path


def _rows(out):
    with open(os.path.join(out, "list.csv")) as f:
        return list(csv.reader(f))[1:]


def test_folder_csv_round_trip(toy_sets, tmp_path):
    out = toy_sets["folder"][0]
    from_folders = load_dataset("folder", out)  # no official counts: verify_counts is moot
    from_csv = load_dataset("folder", os.path.join(out, "list.csv"))
    for split in ("train", "query", "gallery"):
        assert sorted(getattr(from_folders, split)) == sorted(getattr(from_csv, split))
    # written back as a CSV elsewhere (absolute paths), read again: the same records
    rows = [[r.path, from_csv.train_pids[r.pid], r.camid, "train"] for r in from_csv.train]
    rows += [[r.path, from_csv.test_pids[r.pid], r.camid, s] for s in ("query", "gallery")
             for r in getattr(from_csv, s)]
    again = load_dataset("folder", _write_csv(str(tmp_path / "again.csv"), rows),
                         allow_outside_root=True)  # DATASETS.ALLOW_OUTSIDE_ROOT True
    for split in ("train", "query", "gallery"):
        assert getattr(again, split) == getattr(from_csv, split)


def test_folder_any_integer_ids_and_cameras(toy_sets, tmp_path):
    out = toy_sets["folder"][0]
    rows = _rows(out)
    # shift every id by -500 and every camera by -3: -1 becomes an ordinary person, not junk
    shifted = [[os.path.join(out, p), int(pid) - 500, int(cam) - 3, s] for p, pid, cam, s in rows]
    data = load_dataset("folder", _write_csv(str(tmp_path / "neg.csv"), shifted),
                        allow_outside_root=True)
    base = load_dataset("folder", os.path.join(out, "list.csv"))
    assert min(data.train_pids) < 0
    assert [r._replace(camid=r.camid + 3) for r in data.train] == base.train
    assert [r.camid for r in data.query] == [r.camid - 3 for r in base.query]
    assert [r.pid for r in data.gallery] == [r.pid for r in base.gallery]  # same renumbering
    assert min(r.pid for r in data.query + data.gallery) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:1] + [rows[1][:3] + ["test"]] + rows[2:],
     r"list.csv, line 3: split must be train, query or gallery, got 'test'"),
    (lambda rows: rows[:1] + [[rows[1][0], "abc"] + rows[1][2:]] + rows[2:],
     r"list.csv, line 3: pid must be an integer, got 'abc'"),
    (lambda rows: rows[:1] + [rows[1][:3]] + rows[2:], r"list.csv, line 3: expected 4 values"),
    (lambda rows: [r for r in rows if not (r[3] == "gallery" and r[1] == rows[0][1])],
     r"list.csv: 1 query identities have no image in the gallery: \[%s\]"),
    (lambda rows: [r for r in rows if r[3] != "train" or r[1] == [
        x for x in rows if x[3] == "train"][0][1]],
     r"list.csv: the train split has 1 identities; at least 2"),
    (lambda rows: rows[:1] + [["nothere/x.jpg"] + rows[1][1:]] + rows[2:],
     r"1 damaged image files.*nothere/x.jpg: cannot read the file"),
])
def test_folder_csv_errors(toy_sets, tmp_path, edit, message):
    out = _copy(toy_sets, "folder", tmp_path)
    rows = _rows(out)
    rows.sort(key=lambda r: r[3] != "query")  # a query row first
    if "%s" in message:
        message = message % rows[0][1]
    _write_csv(os.path.join(out, "list.csv"), edit(rows))
    with pytest.raises(DatasetError, match=message):
        load_dataset("folder", os.path.join(out, "list.csv"))


def test_folder_csv_image_listed_twice_names_both_lines(toy_sets, tmp_path):
    out = _copy(toy_sets, "folder", tmp_path)
    rows = _rows(out)
    gallery = [r for r in rows if r[3] == "gallery"][0]
    # the same file again, spelled differently, among the gallery rows (line 2 is rows[0])
    rows.insert(5, ["./" + gallery[0]] + gallery[1:])
    first = 2 + rows.index(gallery)
    _write_csv(os.path.join(out, "list.csv"), rows)
    with pytest.raises(DatasetError) as info:
        load_dataset("folder", os.path.join(out, "list.csv"))
    assert str(info.value) == ("%s, lines %d and %d: the same image ./%s is listed twice"
                               % (os.path.join(out, "list.csv"), min(first, 7), max(first, 7),
                                  gallery[0]))


def test_folder_csv_not_utf8_or_nul_is_one_line(toy_sets, tmp_path):
    out = _copy(toy_sets, "folder", tmp_path)
    rows = _rows(out)
    path = os.path.join(out, "list.csv")
    text = "path,pid,camid,split\n" + "".join(",".join(r) + "\n" for r in rows)
    lines = text.encode("utf-8").split(b"\n")
    lines[3] = "caf\u00e9.jpg,1,1,train".encode("latin-1")
    open(path, "wb").write(b"\n".join(lines))
    with pytest.raises(DatasetError) as info:
        load_dataset("folder", path)
    assert str(info.value).startswith("%s, line 4: not UTF-8 text" % path)
    assert "\n" not in str(info.value)
    lines[3] = b"query/a\x00b.jpg,1,1,query"
    open(path, "wb").write(b"\n".join(lines))
    with pytest.raises(DatasetError, match=re.escape(path) + ", line 4: the path holds a NUL"):
        load_dataset("folder", path)


@pytest.mark.parametrize("cell", ["/etc/passwd", "../outside.jpg", "train/../../x.jpg"])
def test_folder_csv_paths_stay_under_the_list_folder(toy_sets, tmp_path, cell):
    out = _copy(toy_sets, "folder", tmp_path)
    rows = _rows(out)
    rows.insert(0, [cell, "1", "1", "train"])
    path = _write_csv(os.path.join(out, "list.csv"), rows)
    with pytest.raises(DatasetError) as info:
        load_dataset("folder", path)
    assert str(info.value) == ("%s, line 2: the path leads outside the list's folder %s; give a "
                               "path under it (or set DATASETS.ALLOW_OUTSIDE_ROOT True)"
                               % (path, out))


def test_errors_never_show_a_non_image_files_content(toy_sets, tmp_path):
    from reid_baseline.config import load_config
    from reid_baseline.data.datasets import build_datasets

    out = _copy(toy_sets, "folder", tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-CONTENT\n")
    rows = _rows(out)
    rows.insert(0, [str(secret), "1", "1", "train"])
    path = _write_csv(os.path.join(out, "list.csv"), rows)
    cfg = load_config(None, ["DATASETS.NAME", "folder", "DATASETS.ROOT", path,
                             "DATASETS.ALLOW_OUTSIDE_ROOT", "True"])
    with pytest.raises(DatasetError) as info:
        build_datasets(cfg)  # allowed outside the folder: the image check refuses it
    assert "secret.txt: not a JPEG" in str(info.value) and "root:x" not in str(info.value)
    with pytest.raises(DatasetError) as info:  # the list option off (the default)
        build_datasets(load_config(None, ["DATASETS.NAME", "folder", "DATASETS.ROOT", path]))
    assert "leads outside the list's folder" in str(info.value)
    from reid_baseline.data.images import read_image
    for name, data in (("text.jpg", b"root:x:0:0:SECRET\n"),
                       ("fake.jpg", b"\xff\xd8SECRET-CONTENT\xff\xd9")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError) as info:
            read_image(str(tmp_path / name))
        assert "SECRET" not in str(info.value) and "root:x" not in str(info.value)
    with pytest.raises(DatasetError) as info:  # a non-CSV file given as the list
        load_dataset("folder", str(secret))
    assert "SECRET" not in str(info.value) and "not a header row" in str(info.value)


def test_folder_bad_header_and_names(toy_sets, tmp_path):
    out = _copy(toy_sets, "folder", tmp_path)
    path = _write_csv(str(tmp_path / "h.csv"), _rows(out), header="file,id,cam,split")
    with pytest.raises(DatasetError, match=re.escape(path) + ", line 1: expected the header row "
                                                             "path,pid,camid,split, got file,id"):
        load_dataset("folder", path)
    query = os.path.join(out, "query")
    name = sorted(os.listdir(query))[0]
    os.rename(os.path.join(query, name), os.path.join(query, "17_frame3.jpg"))
    with pytest.raises(DatasetError, match=r"17_frame3.jpg: no camera field c<cam> after the id"):
        load_dataset("folder", out)
    with pytest.raises(DatasetError, match="expected sub-folders train/, query/, gallery/"):
        load_dataset("folder", query)


# ---------------------------------------------------------------- registry, configs, runs
def test_registry(toy_market_root):
    market = load_dataset("market1501", toy_market_root, verify_counts=False)
    assert market.train == load_market1501(toy_market_root, False).train
    with pytest.raises(DatasetError, match="unknown data set 'viper'; expected one of market1501"):
        load_dataset("viper", toy_market_root)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_config_of_each_set_reads_its_layout(toy_sets, name):
    """`train.py --config configs/<set>.yml` loads this data: the config names the layout
    and checks the official counts; a generated copy loads once the check is off."""
    path = os.path.join(ROOT, "configs", name + ".yml")
    cfg = load_config(path, ["DATASETS.ROOT", toy_sets[name][0]])
    assert cfg.DATASETS.NAME == name and cfg.DATASETS.VERIFY_COUNTS and cfg.INPUT.HEIGHT == 384
    with pytest.raises(DatasetError, match="DATASETS.VERIFY_COUNTS False"):
        build_datasets(cfg)
    cfg = load_config(path, ["DATASETS.ROOT", toy_sets[name][0], "DATASETS.VERIFY_COUNTS", "False"])
    data = build_datasets(cfg)
    assert data.num_train_pids == SMALL["num_train_ids"] and len(data.query) > 0


def test_build_datasets_cross(toy_sets, make_tiny_cfg, tmp_path):
    same = build_datasets(make_tiny_cfg(tmp_path))
    assert not isinstance(same, CrossDataset)
    cfg = make_tiny_cfg(tmp_path, "DATASETS.TEST_NAME", "msmt17", "DATASETS.TEST_ROOT",
                        toy_sets["msmt17"][0])
    cross = build_datasets(cfg)
    msmt = load_dataset("msmt17", toy_sets["msmt17"][0], False)
    assert cross.train == same.train and cross.num_train_pids == same.num_train_pids
    assert cross.query == msmt.query and cross.gallery == msmt.gallery
    assert "MSMT17_V1 at" in cross.summary() and "Market-1501 at" in cross.summary()


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_cross_dataset_train_and_evaluate(toy_sets, make_tiny_cfg, tmp_path):
    """Train on a (small) toy Market-1501 set evaluating on the toy MSMT17 set each epoch,
    then evaluate the saved model on DukeMTMC-reID as evaluate.py does."""
    from reid_baseline.data.toy.market1501 import make_toy_market1501
    from reid_baseline.engine.loop import train
    from reid_baseline.evaluation.evaluator import evaluate_params

    market = make_toy_market1501(str(tmp_path / "market"), seed=4, num_distractors=2,
                                 num_junk=2, **SMALL)["root"]
    # Test sets of 12 people (chance Rank-1 about 1/12): room to be well above chance.
    roots = {name: str(tmp_path / name) for name in ("msmt17", "dukemtmc")}
    for name, root in roots.items():
        make_toy_dataset(name, root, seed=5, num_train_ids=2, num_test_ids=12,
                         images_per_id_per_camera=1)
    cfg = make_tiny_cfg(tmp_path / "run", "DATASETS.ROOT", market, "SOLVER.BATCH_SIZE", "8",
                        "SOLVER.MAX_EPOCHS", "2", "SOLVER.EVAL_PERIOD", "2",
                        "DATASETS.TEST_NAME", "msmt17", "DATASETS.TEST_ROOT", roots["msmt17"])
    history = train(cfg)
    msmt = load_dataset("msmt17", roots["msmt17"], False)
    assert history[-1]["num_query"] == len(msmt.query)
    # What is learnt on one set ranks another's people well above a random order.
    assert history[-1]["rank1"] > 3 * _chance(msmt), (history[-1]["rank1"], _chance(msmt))
    duke_cfg = make_tiny_cfg(tmp_path / "run", "DATASETS.ROOT", market,
                             "DATASETS.TEST_NAME", "dukemtmc", "DATASETS.TEST_ROOT",
                             roots["dukemtmc"])
    results = evaluate_params(duke_cfg, str(tmp_path / "run" / "model_final.params"))
    duke = load_dataset("dukemtmc", roots["dukemtmc"], False)
    assert results["num_query"] == len(duke.query) and results["num_gallery"] == len(duke.gallery)
    # these seeds give Rank-1 41.2 (chance 7.2) on MSMT17, 33.3 (chance 6.0) on DukeMTMC-reID
    assert results["rank1"] > 3 * _chance(duke), (results["rank1"], _chance(duke))


def _chance(dataset):
    """Rank-1 (percent) of a random gallery order on `dataset`'s query/gallery."""
    from reid_baseline.evaluation.evaluator import record_ids
    from reid_baseline.evaluation.protocol import chance_rank1

    (q_pids, q_cams), (g_pids, g_cams) = record_ids(dataset.query), record_ids(dataset.gallery)
    return 100 * chance_rank1(q_pids, g_pids, q_cams, g_cams)


# ---------------------------------------------------------------- preparation and scripts
def _zip(folder, path):
    with zipfile.ZipFile(path, "w") as archive:
        for sub, _, files in os.walk(folder):
            for name in sorted(files):
                full = os.path.join(sub, name)
                archive.write(full, os.path.relpath(full, os.path.dirname(folder)))
    return path


def test_prepare_dataset_msmt17(toy_sets, tmp_path, capsys):
    from reid_baseline.data.archive import md5sum
    from reid_baseline.data.prepare import prepare_dataset

    path = _zip(os.path.join(toy_sets["msmt17"][0], "MSMT17_V1"), str(tmp_path / "MSMT17_V1.zip"))
    data = prepare_dataset("msmt17", str(tmp_path / "out"), zip_path=path, verify_counts=False)
    assert data.root == str(tmp_path / "out" / "MSMT17_V1")
    assert "no checksum is published" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="MD5 checksum mismatch"):
        prepare_dataset("msmt17", str(tmp_path / "o2"), zip_path=path, md5="0" * 32)
    assert prepare_dataset("msmt17", str(tmp_path / "o3"), zip_path=path, md5=md5sum(path),
                           verify_counts=False).num_train_pids == SMALL["num_train_ids"]
    with pytest.raises(DatasetError, match="no zip given.*--zip"):
        prepare_dataset("dukemtmc", str(tmp_path / "o4"))
    with pytest.raises(DatasetError, match="folder: no archive to prepare"):
        prepare_dataset("folder", str(tmp_path / "o5"))


def _script(name):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_scripts(toy_sets, tmp_path, capsys):
    _script("make_toy_dataset").main(["cuhk03np", "--out", str(tmp_path / "c"),
                                      "--num-train-ids", "3", "--num-test-ids", "2"])
    assert "CUHK03-NP (detected) at" in capsys.readouterr().out
    path = _zip(os.path.join(str(tmp_path / "c"), "cuhk03-np"), str(tmp_path / "cuhk03-np.zip"))
    _script("prepare_dataset").main(["cuhk03np", "--out", str(tmp_path / "p"), "--zip", path,
                                     "--no-verify-counts"])
    printed = capsys.readouterr().out
    assert "MD5 check skipped" in printed and "CUHK03-NP (detected) at" in printed
