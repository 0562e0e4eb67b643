"""Export the image-to-feature model of a trained run: MXNet symbol + params
(HybridBlock.export) or ONNX (MXNet's own mx.onnx, dynamic batch axis), each checked against
MXNet and ReIDModel.extract() on random and real images before its files get their names.

By default the exported graph is what extract() computes: the image and its horizontal mirror
through the network, averaged (TEST.FLIP_FEATURES), then L2-normalised
(TEST.NORMALIZE_FEATURES). raw=True exports the network's feature alone."""
import os
import shutil
import tempfile

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..errors import ModelError, OutputError, ParityError, error_line, install_hint
from ..evaluation.features import FeatureExtractor
from ..evaluation.provenance import check_run_config
from ..fileio import check_output_file, move_output, output_path

FORMATS = ("mxnet", "onnx")
PARITY_TOLERANCE = 1e-4  # largest |exported - MXNet or extract()| feature difference accepted
L2_EPS = 1e-10  # MXNet's L2Normalization epsilon, so the norm below equals extract()'s


class TestTimeFeature(gluon.HybridBlock):
    """`embedding` followed by extract()'s test-time post-processing, as one graph that
    HybridBlock.export and mx.onnx convert: the mirror is a gather of the width axis in
    reverse order (mx.onnx's `flip` converter gives a wrong shape), the norm sum/sqrt ops
    (its L2Normalization converter takes 3-D inputs only)."""

    def __init__(self, embedding, width, flip=True, normalize=True):
        super().__init__(prefix="testtime_")
        self.embedding = embedding
        self._width, self._flip, self._normalize = width, flip, normalize

    def hybrid_forward(self, F, x):
        feat = self.embedding(x)
        if self._flip:  # NCHW: axis 3 is the width
            mirror = F.take(x, F.arange(self._width - 1, -1, -1), axis=3)
            feat = (feat + self.embedding(mirror)) * 0.5
        if self._normalize:
            norm = F.sqrt(F.sum(F.square(feat), axis=1, keepdims=True) + L2_EPS)
            feat = F.broadcast_div(feat, norm)
        return feat


def export_block(embedding, cfg, raw=False):
    """The block to export: `embedding` itself when `raw`, else TestTimeFeature with the
    config's TEST.FLIP_FEATURES and TEST.NORMALIZE_FEATURES."""
    if raw:
        return embedding
    return TestTimeFeature(embedding, cfg.INPUT.WIDTH, cfg.TEST.FLIP_FEATURES,
                           cfg.TEST.NORMALIZE_FEATURES)


def _input_shape(cfg, batch=1):
    return (batch, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)


def export_symbol(embedding, cfg, prefix):
    """PREFIX-symbol.json and PREFIX-0000.params of the hybridized `embedding`; returns both
    paths. Loadable without this package by mx.gluon.SymbolBlock.imports."""
    embedding.hybridize()
    # One forward pass builds the graph that export writes.
    embedding(mx.nd.zeros(_input_shape(cfg)))
    embedding.export(prefix)
    return prefix + "-symbol.json", prefix + "-0000.params"


def export_symbol_files(embedding, cfg, prefix, overwrite=False, check=None):
    """export_symbol into a temporary folder beside `prefix`, `check(temporary prefix)` (if
    given; it raises to stop), then each file moved under its name through fileio.output_path
    (checked, flushed, atomic, recorded): a full disk leaves an OutputError and no file cut
    short under a final name. Returns both paths."""
    folder = os.path.dirname(os.path.abspath(prefix))
    with tempfile.TemporaryDirectory(prefix=".reid_export_", dir=folder) as tmp_dir:
        try:
            made = export_symbol(embedding, cfg, os.path.join(tmp_dir, "net"))
        except (OSError, mx.base.MXNetError) as exc:
            raise OutputError("cannot write %s-symbol.json and %s-0000.params: %s; nothing was "
                              "written under those names"
                              % (prefix, prefix, error_line(exc).rstrip("."))) from exc
        if check is not None:
            check(os.path.join(tmp_dir, "net"))
        paths = ["%s-symbol.json" % prefix, "%s-0000.params" % prefix]
        # Nested: both copies are complete before either replaces its name, so a full disk
        # never leaves a new symbol beside old params.
        with output_path(paths[0], overwrite, "exported file") as symbol_tmp, \
                output_path(paths[1], overwrite, "exported file") as params_tmp:
            shutil.copyfile(made[0], symbol_tmp)
            shutil.copyfile(made[1], params_tmp)
    return paths


def export_onnx(embedding, cfg, path):
    """`path`: the ONNX model of `embedding` (input "data", N x 3 x H x W normalised RGB, N
    dynamic), converted by mx.onnx from the exported symbol; written atomically."""
    try:
        import mxnet.onnx  # noqa: F401  (needs the onnx package)
        import onnx
    except ImportError as exc:
        raise ModelError("--format onnx needs onnx and onnxruntime: %s (%s)"
                         % (install_hint("export"), exc)) from exc
    with tempfile.TemporaryDirectory(prefix="reid_export_") as tmp_dir, \
            output_path(path, what="ONNX file") as tmp:
        sym, params = export_symbol(embedding, cfg, os.path.join(tmp_dir, "net"))
        mx.onnx.export_model(sym, params, in_shapes=[_input_shape(cfg)], in_types=[np.float32],
                             onnx_file_path=tmp, dynamic=True,
                             dynamic_input_shapes=[(None,) + _input_shape(cfg)[1:]])
        # mx.onnx lists every weight as a graph input too, which makes onnxruntime treat
        # them as overridable (a warning per weight, no constant folding): keep "data" only.
        model = onnx.load(tmp)
        weights = {w.name for w in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        onnx.save(model, tmp)
    return path


def parity_batches(cfg, image_paths, num_random=4, seed=0):
    """Inputs for the parity check: `num_random` random images (one batch), and the files of
    `image_paths` as the evaluation loader prepares them (one batch), float32 NCHW arrays."""
    from ..data.datasets.base import Record
    from ..data.loader import build_test_loader

    rng = np.random.RandomState(seed)
    batches = {"random": rng.standard_normal(_input_shape(cfg, num_random)).astype(np.float32)}
    if image_paths:
        loader = build_test_loader(cfg, [Record(p, 0, 0) for p in image_paths])
        batches["real"] = np.concatenate([batch[0].asnumpy() for batch in loader])
    return batches


def onnx_runner(onnx_path):
    """features(batch): `onnx_path` run by onnxruntime on a float32 NCHW batch."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("the ONNX parity check needs onnxruntime: %s (%s)"
                         % (install_hint("export"), exc)) from exc
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def symbol_runner(prefix):
    """features(batch): PREFIX-symbol.json + PREFIX-0000.params loaded as a user would."""
    net = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    return lambda batch: net(mx.nd.array(batch)).asnumpy()


def parity(block, run, batches, reference=None, where="the exported model"):
    """How far the exported model (`run`: batch -> features) is from MXNet's `block` on each
    batch and, given `reference` (extract()'s features of the real images), from extract():
    {"max_abs_diff": {check: largest |difference|}, "min_cosine": lowest cosine similarity to
    extract() over the real images, or None}."""
    diffs, outputs = {}, {}
    for key, batch in batches.items():
        expected = block(mx.nd.array(batch)).asnumpy()
        outputs[key] = got = np.asarray(run(batch))
        if got.shape != expected.shape:
            raise ParityError("%s gives features of shape %s for %s images, MXNet %s"
                              % (where, got.shape, key, expected.shape))
        diffs[key] = float(np.abs(got - expected).max())
    cosine = None
    if reference is not None and "real" in outputs:
        got = outputs["real"].astype(np.float64)
        ref = reference.astype(np.float64)
        diffs["extract() on real"] = float(np.abs(got - ref).max())
        cosine = float(((got * ref).sum(1) / np.maximum(
            np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)).min())
    return {"max_abs_diff": diffs, "min_cosine": cosine}


def parity_text(check):
    """The parity figures in one phrase: each check's largest difference, the cosine."""
    text = ", ".join("%s images %.3g" % kv for kv in check["max_abs_diff"].items())
    if check["min_cosine"] is not None:
        text += "; lowest cosine to extract() %.7f" % check["min_cosine"]
    return text


def _check_parity(check, where):
    worst = max(check["max_abs_diff"].values())
    if worst > PARITY_TOLERANCE:
        raise ParityError("%s: the exported features differ from MXNet's or extract()'s by up "
                          "to %.3g (%s), above the tolerance %g%s"
                          % (where, worst, parity_text(check), PARITY_TOLERANCE,
                             ": kept as %s.rejected, do not use it" % where
                             if where.endswith(".onnx") else "; nothing was written"))
    return worst


def export_model(cfg, params_path, prefix, fmt="mxnet", check_images=(), num_random=4,
                 overwrite=False, raw=False, force=False):
    """Export the feature model of `params_path` (see the module doc); returns a dict with the
    files written and the parity figures ("max_abs_diff", "max_abs_diff_all", "min_cosine").

    The check images are read before anything is written (an unreadable one is a
    DatasetError). The symbol files are checked in a temporary folder and get their names only
    when the check passes. The ONNX file is written under PREFIX.onnx.unchecked and renamed
    PREFIX.onnx only after its check passes: an unchecked file never sits under the name a
    deployment would pick up. A difference above PARITY_TOLERANCE raises ParityError; the ONNX
    file is then renamed PREFIX.onnx.rejected (kept for inspection); any other failure
    removes it. As evaluate.py: a config that changes the features of the run the params
    belong to is a ConfigError, unless `force` (the warning is then in the result)."""
    if fmt not in FORMATS:
        raise ModelError("--format must be one of %s, got %r" % (", ".join(FORMATS), fmt))
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(folder):  # found before the model is loaded
        raise OutputError("--prefix: folder %s does not exist" % folder)
    path = prefix + ".onnx"
    if fmt == "mxnet":
        for name in ("%s-symbol.json" % prefix, "%s-0000.params" % prefix):
            check_output_file(name, overwrite, "exported file")
    else:
        check_output_file(path, overwrite, "ONNX file")
    warning = check_run_config(cfg, params_path, force=force).warning
    batches = parity_batches(cfg, check_images, num_random)  # before anything is written
    # On the CPU whatever GPUS says: the export's forward pass and the parity check feed CPU arrays.
    extractor = FeatureExtractor(cfg, params_path, ctx=[mx.cpu()])
    block = export_block(extractor.embedding, cfg, raw)
    reference = None
    if not raw and "real" in batches:
        reference = extractor(list(check_images), desc="extract() for the parity check")
    result = {}

    def check_symbol(tmp_prefix):
        result.update(parity(block, symbol_runner(tmp_prefix), batches, reference,
                             "%s-symbol.json" % prefix))
        _check_parity(result, "%s-symbol.json" % prefix)

    if fmt == "mxnet":
        result["files"] = export_symbol_files(block, cfg, prefix, overwrite, check_symbol)
    else:
        unchecked = path + ".unchecked"
        try:
            export_onnx(block, cfg, unchecked)
            result.update(parity(block, onnx_runner(unchecked), batches, reference, path))
        except BaseException:
            if os.path.exists(unchecked):
                os.remove(unchecked)
            raise
        try:
            _check_parity(result, path)
        except ParityError:
            move_output(unchecked, path + ".rejected", overwrite=True)
            raise
        move_output(unchecked, path, overwrite, "ONNX file")
        result["files"] = [path]
    result["max_abs_diff_all"] = max(result["max_abs_diff"].values())
    if warning:
        result["warning"] = warning
    return result
