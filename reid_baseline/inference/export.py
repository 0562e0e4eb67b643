"""Export the image-to-feature network of a trained model: MXNet symbol + params
(HybridBlock.export) or ONNX (MXNet's own mx.onnx, dynamic batch axis) with a parity check
against onnxruntime on random and real images."""
import os
import shutil
import tempfile

import mxnet as mx
import numpy as np

from ..errors import ModelError, OutputError, ParityError, error_line
from ..evaluation.features import FeatureExtractor
from ..fileio import check_output_file, move_output, output_path

FORMATS = ("mxnet", "onnx")
PARITY_TOLERANCE = 1e-4  # largest |MXNet - onnxruntime| feature difference accepted


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


def export_symbol_files(embedding, cfg, prefix, overwrite=False):
    """export_symbol into a temporary folder beside `prefix`, then each file moved under its
    name through fileio.output_path (checked, flushed, atomic, recorded): a full disk leaves
    an OutputError and no file cut short under a final name. Returns both paths."""
    folder = os.path.dirname(os.path.abspath(prefix))
    with tempfile.TemporaryDirectory(prefix=".reid_export_", dir=folder) as tmp_dir:
        try:
            made = export_symbol(embedding, cfg, os.path.join(tmp_dir, "net"))
        except (OSError, mx.base.MXNetError) as exc:
            raise OutputError("cannot write %s-symbol.json and %s-0000.params: %s; nothing was "
                              "written under those names"
                              % (prefix, prefix, error_line(exc).rstrip("."))) from exc
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
        raise ModelError("--format onnx needs onnx and onnxruntime: pip install -e '.[export]' "
                         "(%s)" % exc) from exc
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


def onnx_max_difference(embedding, onnx_path, batches):
    """{batch name: largest |MXNet - onnxruntime| over the features of that batch}."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("the ONNX parity check needs onnxruntime: pip install -e '.[export]'"
                         " (%s)" % exc) from exc
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    diffs = {}
    for key, batch in batches.items():
        expected = embedding(mx.nd.array(batch)).asnumpy()
        got = session.run(None, {name: batch})[0]
        if got.shape != expected.shape:
            raise ParityError("%s: onnxruntime gave features of shape %s for %s images, MXNet %s"
                              % (onnx_path, got.shape, key, expected.shape))
        diffs[key] = float(np.abs(got - expected).max())
    return diffs


def export_model(cfg, params_path, prefix, fmt="mxnet", check_images=(), num_random=4,
                 overwrite=False):
    """Export the feature network of `params_path` (see the module doc); returns a dict with
    the files written and, for ONNX, the parity differences.

    The ONNX file is written under PREFIX.onnx.unchecked and renamed PREFIX.onnx only after
    its parity check passes: an unchecked file never sits under the name a deployment would
    pick up. The check images are read before anything is written (an unreadable one is a
    DatasetError). A difference above PARITY_TOLERANCE raises ParityError; the file is then
    renamed PREFIX.onnx.rejected (kept for inspection); any other failure removes it."""
    if fmt not in FORMATS:
        raise ModelError("--format must be one of %s, got %r" % (", ".join(FORMATS), fmt))
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(folder):  # found before the model is loaded
        raise OutputError("--prefix: folder %s does not exist" % folder)
    path = prefix + ".onnx"
    if fmt == "mxnet":
        for name in ("%s-symbol.json" % prefix, "%s-0000.params" % prefix):
            check_output_file(name, overwrite, "exported file")
    if fmt == "onnx":
        check_output_file(path, overwrite, "ONNX file")
        batches = parity_batches(cfg, check_images, num_random)  # before anything is written
    # On the CPU whatever GPUS says: the export's forward pass and the parity check feed CPU arrays.
    embedding = FeatureExtractor(cfg, params_path, ctx=[mx.cpu()]).embedding
    if fmt == "mxnet":
        return {"files": export_symbol_files(embedding, cfg, prefix, overwrite)}
    unchecked = path + ".unchecked"
    try:
        export_onnx(embedding, cfg, unchecked)
        diffs = onnx_max_difference(embedding, unchecked, batches)
    except BaseException:
        if os.path.exists(unchecked):
            os.remove(unchecked)
        raise
    worst = max(diffs.values())
    if worst > PARITY_TOLERANCE:
        move_output(unchecked, path + ".rejected", overwrite=True)
        raise ParityError("%s: onnxruntime's features differ from MXNet's by up to %.3g (%s), "
                          "above the tolerance %g: kept as %s.rejected, do not use it"
                          % (path, worst, ", ".join("%s images %.3g" % kv
                                                    for kv in diffs.items()), PARITY_TOLERANCE,
                             path))
    move_output(unchecked, path, overwrite, "ONNX file")
    return {"files": [path], "max_abs_diff": diffs, "max_abs_diff_all": worst}
