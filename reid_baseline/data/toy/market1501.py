"""A small synthetic dataset in the exact Market-1501 layout, for CPU demos and tests.

Each identity is a drawn person-like figure with its own combination of upper-body
colour, lower-body colour and clothing pattern (plain / stripes / two-tone / bag),
plus small fixed traits (skin, hair, build, colour shade).  Every image adds what
makes ReID hard: position and scale jitter, facing direction, a per-camera colour
cast and background, background clutter, occluders, blur, noise and JPEG artefacts.
So identities are learnable from pixels but a nearest neighbour on raw pixels is
far from perfect.  Train and test identities are disjoint, as in Market.

The images are drawn with numpy + OpenCV only; write_toy_images writes them in any layout
(this folder has one toy writer per layout of reid_baseline.data.datasets).
"""
import os
import shutil

import cv2
import numpy as np

from ...errors import DatasetError
from ..datasets.market1501 import ROOT_NAME, SPLIT_DIRS

HEIGHT, WIDTH = 128, 64
# RGB palettes; identities use distinct (upper, lower, pattern) combinations.
UPPER = [(200, 35, 35), (35, 65, 190), (40, 150, 55), (230, 200, 45), (238, 238, 232),
         (32, 32, 38), (140, 60, 165), (240, 130, 30), (125, 125, 130), (85, 200, 210)]
LOWER = [(32, 42, 95), (28, 28, 30), (195, 180, 145), (110, 110, 118), (105, 62, 30),
         (95, 135, 195)]
PATTERNS = ("plain", "stripes", "two_tone", "bag")
SKIN = [(235, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45)]
HAIR = [(25, 20, 15), (90, 55, 25), (200, 170, 100), (130, 130, 130)]


def _identity(rng, combo=None):
    """Fixed appearance of one identity; combo=None -> random colours (distractors)."""
    if combo is None:
        upper, lower = rng.randint(0, 256, 3), rng.randint(0, 256, 3)
        pattern = PATTERNS[rng.randint(len(PATTERNS))]
    else:
        u, low, p = combo
        # a fixed per-identity shade so two ids never share exactly the same colours
        upper = np.clip(np.array(UPPER[u]) + rng.randint(-18, 19, 3), 0, 255)
        lower = np.clip(np.array(LOWER[low]) + rng.randint(-18, 19, 3), 0, 255)
        pattern = PATTERNS[p]
    return {"upper": upper, "lower": lower, "pattern": pattern,
            "second": np.array(UPPER[rng.randint(len(UPPER))]),
            "skin": np.array(SKIN[rng.randint(len(SKIN))]),
            "hair": np.array(HAIR[rng.randint(len(HAIR))]),
            "width": rng.uniform(0.88, 1.12), "height": rng.uniform(0.93, 1.05)}


def _camera(rng):
    """Per-camera look: colour cast, brightness and background colours."""
    return {"gain": rng.uniform(0.72, 1.22, 3), "offset": rng.uniform(-22, 22),
            "wall": rng.randint(60, 200, 3), "floor": rng.randint(40, 170, 3),
            "horizon": rng.randint(45, 95)}


def _c(colour):
    return tuple(int(v) for v in colour)


def _background(rng, cam):
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    horizon = cam["horizon"] + rng.randint(-8, 9)
    img[:horizon] = np.clip(cam["wall"] + rng.randint(-15, 16, 3), 0, 255)
    img[horizon:] = np.clip(cam["floor"] + rng.randint(-15, 16, 3), 0, 255)
    for _ in range(rng.randint(2, 7)):  # clutter: windows, poles, signs, cars
        x, y = rng.randint(-10, WIDTH), rng.randint(-10, HEIGHT)
        w, h = rng.randint(4, 30), rng.randint(4, 50)
        cv2.rectangle(img, (x, y), (x + w, y + h), _c(rng.randint(0, 256, 3)), -1)
    for _ in range(rng.randint(0, 3)):
        p1 = (rng.randint(WIDTH), rng.randint(HEIGHT))
        p2 = (rng.randint(WIDTH), rng.randint(HEIGHT))
        cv2.line(img, p1, p2, _c(rng.randint(0, 256, 3)), int(rng.randint(1, 3)))
    return img


def _draw_person(img, ident, cx, top, scale, facing):
    """Draw a front-view figure: head, hair, torso, sleeves, legs, shoes, pattern."""
    s, w, h = scale, ident["width"], ident["height"]
    head_r = int(round(8 * s))
    torso_top = top + 2 * head_r
    torso_h, torso_w = int(42 * s * h), int(22 * s * w)
    leg_top, leg_h, leg_w = torso_top + torso_h, int(48 * s * h), int(9 * s * w)
    x0, x1 = cx - torso_w // 2, cx + torso_w // 2
    upper, lower, second = _c(ident["upper"]), _c(ident["lower"]), _c(ident["second"])
    for lx in (cx - leg_w - 1, cx + 1):
        cv2.rectangle(img, (lx, leg_top), (lx + leg_w, leg_top + leg_h), lower, -1)
        cv2.rectangle(img, (lx - 1, leg_top + leg_h - 3), (lx + leg_w + 1, leg_top + leg_h + 2),
                      (20, 20, 20), -1)
    arm_w = max(3, int(5 * s))
    cv2.rectangle(img, (x0 - arm_w, torso_top + 2), (x0, torso_top + int(torso_h * 0.9)), upper, -1)
    cv2.rectangle(img, (x1, torso_top + 2), (x1 + arm_w, torso_top + int(torso_h * 0.9)), upper, -1)
    cv2.rectangle(img, (x0, torso_top), (x1, leg_top), upper, -1)
    if ident["pattern"] == "stripes":
        for y in range(torso_top + 4, leg_top - 2, max(4, int(7 * s))):
            cv2.rectangle(img, (x0, y), (x1, y + max(1, int(2 * s))), second, -1)
    elif ident["pattern"] == "two_tone":
        cv2.rectangle(img, (x0, torso_top + int(torso_h * 0.55)), (x1, leg_top), second, -1)
    cv2.circle(img, (cx, top + head_r), head_r, _c(ident["skin"]), -1)
    cv2.ellipse(img, (cx, top + head_r), (head_r, head_r), 0, 180, 360, _c(ident["hair"]), -1)
    if ident["pattern"] == "bag":  # shoulder bag; its side follows the facing direction
        bx = x1 + arm_w - 2 if facing > 0 else x0 - arm_w - int(12 * s) + 2
        by = torso_top + int(torso_h * 0.55)
        cv2.line(img, (x0 if facing > 0 else x1, torso_top), (bx + int(6 * s), by), second, 2)
        cv2.rectangle(img, (bx, by), (bx + int(12 * s), by + int(15 * s)), second, -1)


def _render(rng, cam, ident=None, junk=False):
    """One RGB uint8 image: background, figure (if any), occluder, camera cast, noise."""
    img = _background(rng, cam)
    if ident is not None:
        scale = rng.uniform(0.85, 1.05)
        cx, top = WIDTH // 2 + rng.randint(-4, 5), 6 + rng.randint(-4, 5)
        if junk:  # a bad detection: the figure mostly outside the box
            cx, top = (rng.choice([-14, WIDTH + 14]), top) if rng.rand() < 0.5 else (cx, 80)
        _draw_person(img, ident, cx, top, scale, 1 if rng.rand() < 0.5 else -1)
    if rng.rand() < 0.15:  # occluder entering from the bottom or a side
        y = rng.randint(80, 115)
        x = rng.choice([-30, 0, 40])
        x1, colour = x + rng.randint(25, 60), _c(rng.randint(0, 256, 3))
        cv2.rectangle(img, (x, y), (x1, HEIGHT), colour, -1)
    out = img.astype(np.float32) * cam["gain"] * rng.uniform(0.85, 1.15) + cam["offset"]
    out += rng.normal(0, rng.uniform(3, 8), out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.rand() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


def prepare_output(root, overwrite=False):
    """Create the empty folder `root` for a generated set; an existing non-empty one is a
    DatasetError unless `overwrite` (then it is deleted first)."""
    if os.path.isdir(root) and os.listdir(root):
        if not overwrite:
            raise DatasetError("%s: already exists and is not empty; pass overwrite=True "
                               "(--overwrite) or choose another output folder" % root)
        shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)


def write_toy_images(split_dirs, file_name, num_train_ids=32, num_test_ids=32,
                     images_per_id_per_camera=3, num_cameras=6, num_distractors=48,
                     num_junk=32, seed=0, cameras_per_id=(3, 6)):
    """Draw the toy identities and cameras and write their images in any layout.

    ``file_name(rng, split, pid, cam, frame)`` names each image (relative to
    ``split_dirs[split]``; it may hold a sub-folder; ``.png`` writes a PNG) for split
    train, query or gallery, original pid (0: distractor, -1: junk), 0-based camera and a
    per-camera increasing frame number; it may draw from `rng`.  Each identity is seen by a
    random subset of ``cameras_per_id`` (min, max) cameras with ``images_per_id_per_camera``
    images in each; test identities get one query image per camera they were seen in plus
    the gallery images; the gallery also holds ``num_distractors`` images of id 0 and
    ``num_junk`` of id -1.  Deterministic for a seed.  Returns the written images as
    ``(split, name, pid, cam)`` tuples in writing order.
    """
    n_ids = num_train_ids + num_test_ids
    combos = len(UPPER) * len(LOWER) * len(PATTERNS)
    if n_ids > combos or num_train_ids < 1 or num_test_ids < 1:
        raise ValueError("need 1 <= train ids, 1 <= test ids and train + test ids <= %d" % combos)
    lo, hi = min(max(2, cameras_per_id[0]), num_cameras), min(cameras_per_id[1], num_cameras)
    for d in split_dirs.values():
        os.makedirs(d, exist_ok=True)

    rng = np.random.RandomState(seed)
    cams = [_camera(rng) for _ in range(num_cameras)]
    pids = sorted(rng.choice(np.arange(1, 1502), n_ids, replace=False))
    is_train = np.zeros(n_ids, bool)
    is_train[rng.choice(n_ids, num_train_ids, replace=False)] = True
    chosen = rng.choice(combos, n_ids, replace=False)
    idents = [_identity(rng, np.unravel_index(c, (len(UPPER), len(LOWER), len(PATTERNS))))
              for c in chosen]
    frame = [int(rng.randint(100, 1000)) for _ in range(num_cameras)]
    written = []

    def write(split, pid, cam, ident, junk=False):
        frame[cam] += int(rng.randint(1, 40))  # unique frame per camera -> unique names
        name = file_name(rng, split, pid, cam, frame[cam])
        img = _render(rng, cams[cam], ident, junk)
        path = os.path.join(split_dirs[split], name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.randint(85, 96))])
        written.append((split, name, pid, cam))

    for pid, train, ident in zip(pids, is_train, idents, strict=True):
        seen = sorted(rng.choice(num_cameras, rng.randint(lo, hi + 1), replace=False))
        for cam in seen:
            if not train:
                write("query", pid, cam, ident)
            for _ in range(images_per_id_per_camera):
                write("train" if train else "gallery", pid, cam, ident)
    for _ in range(num_distractors):
        write("gallery", 0, rng.randint(num_cameras), _identity(rng), junk=rng.rand() < 0.3)
    for _ in range(num_junk):
        write("gallery", -1, rng.randint(num_cameras),
              _identity(rng) if rng.rand() < 0.5 else None, junk=True)
    return written


def _market_name(rng, split, pid, cam, frame):
    return "%s_c%ds%d_%06d_%02d.jpg" % ("-1" if pid < 0 else "%04d" % pid, cam + 1,
                                        rng.randint(1, 7), frame, rng.randint(1, 9))


def make_toy_market1501(out_dir, num_train_ids=32, num_test_ids=32, images_per_id_per_camera=3,
                        num_cameras=6, num_distractors=48, num_junk=32, seed=0,
                        cameras_per_id=(3, 6), overwrite=False):
    """Write ``out_dir/Market-1501-v15.09.15/{bounding_box_train,bounding_box_test,query}``.

    See :func:`write_toy_images` for what is drawn.  Returns a dict of counts (ids exclude
    distractors; gallery_images excludes junk, like the loader).  With the
    defaults (seed 0): 32/32 ids, 435 train, 136 query and 456 gallery images (48
    distractors included) + 32 junk files; about 1 s.
    """
    if not 2 <= num_cameras <= 9:  # file names hold a single camera digit
        raise ValueError("num_cameras must be in 2..9, got %d" % num_cameras)
    root = os.path.join(os.path.abspath(str(out_dir)), ROOT_NAME)
    prepare_output(root, overwrite)
    written = write_toy_images(
        {k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()}, _market_name,
        num_train_ids, num_test_ids, images_per_id_per_camera, num_cameras, num_distractors,
        num_junk, seed, cameras_per_id)
    counts = toy_counts(written)
    counts.update(root=root, train_ids=num_train_ids, query_ids=num_test_ids,
                  gallery_ids=num_test_ids, cameras=num_cameras, seed=seed,
                  gallery_files=counts["gallery_images"] + num_junk)
    return counts


def toy_counts(written):
    """Images per split (junk excluded), distractor (id 0) and junk (id -1) images of a
    :func:`write_toy_images` result."""
    counts = {"%s_images" % s: sum(w[0] == s and w[2] != -1 for w in written)
              for s in ("train", "query", "gallery")}
    counts.update(distractors=sum(w[2] == 0 for w in written),
                  junk=sum(w[2] == -1 for w in written))
    return counts
