"""Backbone weights: GluonCV ResNets with ImageNet weights from the MXNet stores, the Hugging Face
Hub (timm's safetensors files, converted to GluonCV's names) or a local file.

MODEL.PRETRAINED: "" (random), "imagenet" (GluonCV's model store), "imagenet-mxnet" (MXNet's model
zoo), "hf:<owner>/<repo>" (a timm ResNet on the Hub, e.g. hf:timm/resnet50.gluon_in1k), or the path
of a .params (saved by Gluon) or .safetensors (timm's names) file. docs/WEIGHTS.md says which
weights exist today and which ones the published number used.
"""
import json
import os
import urllib.request

import mxnet as mx
from gluoncv.model_zoo import get_model
from gluoncv.model_zoo import model_store as gluoncv_store
from mxnet.gluon.model_zoo import model_store as mxnet_store

from ..errors import ModelError, OutputError, error_line
from ..fileio import check_output_file, file_sha256, is_ours, output_path
from .backbones import (
    BACKBONES,
    HF_PREFIX,
    check_pairing,
    hub_backbone,
    read_safetensors,
    timm_backbone,
    timm_to_gluoncv,
)

HF_FILE = "model.safetensors"  # timm's file name in every model repository
STORE_RETIRED = ("the MXNet model stores have been unreliable since MXNet's retirement (2023)")

# MODEL.PRETRAINED keyword -> (model store, its name in messages, the Python that downloads a
# backbone's weights from it). Both stores name files <name>-<first 8 hex of the sha1>.params under
# <MXNET_HOME>/models and verify the sha1, but their resnet50_v1 and resnet152_v1 are different
# trainings: GluonCV's resnet50_v1 has 77.36% ImageNet top-1, MXNet's own 76.47%, and MXNet's is
# what the reference run that printed Rank-1 93.1 started from. (Their resnet18/34/101_v1 are
# the same file.)
IMAGENET_SOURCES = {
    "imagenet": (gluoncv_store, "the GluonCV model store",
                 "import gluoncv; gluoncv.model_zoo.get_model('%s', pretrained=True)"),
    "imagenet-mxnet": (mxnet_store, "MXNet's model zoo",
                       "import mxnet; mxnet.gluon.model_zoo.vision.get_model('%s', "
                       "pretrained=True)"),
}


def weights_kind(pretrained):
    """What MODEL.PRETRAINED asks for: none | imagenet | imagenet-mxnet | hf | file."""
    if not pretrained:
        return "none"
    if pretrained in IMAGENET_SOURCES:
        return pretrained
    return "hf" if pretrained.startswith(HF_PREFIX) else "file"


def models_dir():
    """<MXNET_HOME>/models (default ~/.mxnet/models): where the stores and the Hub cache write."""
    return os.path.expanduser(os.path.join(mx.base.data_dir(), "models"))


def _has_weights(store, name):
    try:
        store.short_hash(name)
    except ValueError:  # the stores' own answer to "no pretrained model for this name"
        return False
    return True


def store_file_name(name, source):
    """The file name the store of `source` keeps `name`'s weights under, e.g.
    resnet50_v1-cc729d95.params; ModelError when that store has none."""
    store, label, _ = IMAGENET_SOURCES[source]
    if not _has_weights(store, name):
        has = [b for b in BACKBONES if _has_weights(store, b)]
        other = [key for key, (other_store, _, _) in IMAGENET_SOURCES.items()
                 if key != source and _has_weights(other_store, name)]
        raise ModelError("MODEL.PRETRAINED %s: %s has no ImageNet weights for %s, only for %s%s"
                         % (source, label, name, ", ".join(has),
                            "; MODEL.PRETRAINED %s has them" % other[0] if other else ""))
    return "%s-%s.params" % (name, store.short_hash(name))


def _store_url(file_name):
    repo = os.environ.get("MXNET_GLUON_REPO", gluoncv_store.apache_repo_url)
    return "%s/gluon/models/%s" % (repo.rstrip("/"), file_name.replace(".params", ".zip"))


def imagenet_weights_file(name, source):
    """Local path of the ImageNet weights of backbone `name` from `source` (a key of
    IMAGENET_SOURCES), downloaded by that store (or the mirror in MXNET_GLUON_REPO) into
    <MXNET_HOME>/models unless a file with the right name and sha1 is already there.

    ModelError when the store has no weights for `name`, or the download fails: the message
    names the file and the alternatives (a copy of it, a mirror, the Hub weights of v1b)."""
    store, label, fetch = IMAGENET_SOURCES[source]
    file_name = store_file_name(name, source)
    root = models_dir()
    try:
        return store.get_model_file(name, root=root)
    except Exception as exc:  # no network, dead store, proxy, bad hash: all need the same advice
        raise ModelError(
            "MODEL.PRETRAINED %s: could not get %s (%s ImageNet weights) from %s: %s; %s. "
            "Alternatives: copy %s (from a machine that has it, or where python -c \"%s\" still "
            "works) into %s; or set MXNET_GLUON_REPO to a mirror serving gluon/models/%s; or "
            "train configs/market1501_v1b.yml (resnet50_v1b with the Hugging Face Hub weights "
            "hf:timm/resnet50.gluon_in1k, see docs/WEIGHTS.md)."
            % (source, file_name, name, label, error_line(exc).rstrip("."), STORE_RETIRED,
               file_name, fetch % name, root, file_name.replace(".params", ".zip"))) from exc


# ---------------------------------------------------------------- the Hub, cached as .params
def hub_cache_paths(repo):
    """(<MXNET_HOME>/models/hf-<owner>--<repo>.params, its .json record) for a Hub repository."""
    stem = os.path.join(models_dir(), "hf-" + repo.replace("/", "--"))
    return stem + ".params", stem + ".json"


def _cached_record(params, record):
    """The cache record when the package wrote it (fileio.is_ours) and the .params file still
    has its SHA-256, else None."""
    if not (os.path.isfile(params) and is_ours(record)):
        return None
    with open(record, encoding="utf-8") as f:
        data = json.load(f)
    return data if data.get("params_sha256") == file_sha256(params) else None


def hub_weights_file(repo, backbone):
    """The converted .params file of Hub repository `repo` (timm's model.safetensors), downloaded
    with huggingface_hub and converted once; later calls use the cache and its record."""
    params, record = hub_cache_paths(repo)
    cached = _cached_record(params, record)
    if cached is not None:
        check_pairing(backbone, cached.get("backbone"), HF_PREFIX + repo)
        return params
    os.makedirs(models_dir(), exist_ok=True)
    # A damaged .params beside the package's own record is the package's cache: rebuilt.
    check_output_file(params, is_ours(record), "cached weights", advice="move it away")
    check_output_file(record, what="weights record", advice="move it away")
    from huggingface_hub import hf_hub_download
    try:
        source = hf_hub_download(repo_id=repo, filename=HF_FILE)
    except Exception as exc:  # offline, no such repository or file, proxy: one line each
        raise ModelError("MODEL.PRETRAINED %s%s: could not download %s from the Hugging Face Hub: "
                         "%s. Offline? Download https://huggingface.co/%s/resolve/main/%s on a "
                         "connected machine and set MODEL.PRETRAINED to its path"
                         % (HF_PREFIX, repo, HF_FILE, error_line(exc).rstrip("."), repo,
                            HF_FILE)) from exc
    tensors = read_safetensors(source)
    check_pairing(backbone, timm_backbone(tensors, source), HF_PREFIX + repo)
    try:
        with output_path(params, True, "cached weights") as tmp:  # checked above
            mx.nd.save(tmp, {k: mx.nd.array(v) for k, v in timm_to_gluoncv(tensors).items()})
    except mx.base.MXNetError as exc:  # MXNet's own writer on a full disk
        raise OutputError("cannot write %s: %s; nothing was written under that name"
                          % (params, error_line(exc).rstrip("."))) from exc
    revision = os.path.basename(os.path.dirname(source))  # the Hub cache's snapshots/<commit>/
    with output_path(record, what="weights record", advice="move it away") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"source": HF_PREFIX + repo, "file": HF_FILE,
                       "revision": revision, "backbone": backbone,
                       "safetensors_sha256": file_sha256(source), "params_sha256": file_sha256(params)},
                      f, indent=1)
    return params


# ---------------------------------------------------------------- loading
def _load_strict(net, name, arrays, origin, ctx):
    """Every trunk parameter of the GluonCV classifier `net` (backbone `name`) from `arrays`,
    shapes checked; a missing, extra or misshapen tensor is a ModelError naming it and `origin`."""
    every = net._collect_params_with_prefix()
    # the ImageNet classifier (v1: output, v1b: fc) is not part of the trunk: used if present
    wanted = {k: p for k, p in every.items() if not k.startswith(("fc.", "output."))}
    for key, param in wanted.items():
        if key not in arrays:
            raise ModelError("MODEL.PRETRAINED: %s has no tensor for %s (MODEL.BACKBONE %s)"
                             % (origin, key, name))
        shape = tuple(arrays[key].shape)
        if len(shape) != len(param.shape) or any(e not in (0, f) for e, f in
                                                  zip(param.shape, shape, strict=True)):
            raise ModelError("MODEL.PRETRAINED: %s has %s with shape %s, MODEL.BACKBONE %s "
                             "expects %s" % (origin, key, shape, name, param.shape))
    extra = sorted(set(arrays) - set(every))
    if extra:
        raise ModelError("MODEL.PRETRAINED: %s has %d tensors MODEL.BACKBONE %s lacks, e.g. %s"
                         % (origin, len(extra), name, extra[0]))
    # Gluon 1.x has no public load-from-dict: _load_init is what Block.load_parameters calls
    # (it also completes the shapes left to the first forward pass).
    for key, param in every.items():
        if key in arrays:
            value = arrays[key]
            param._load_init(value if isinstance(value, mx.nd.NDArray) else
                             mx.nd.array(value, dtype="float32"), ctx)
        else:  # the classifier, when the file has none
            param.initialize(ctx=ctx)


def weights_file(name, pretrained):
    """The local file holding the weights MODEL.PRETRAINED `pretrained` names for backbone
    `name` (downloaded and converted first when needed), or None for random initialisation.
    A ModelError when it cannot be had: the message says what to do instead."""
    kind = weights_kind(pretrained)
    if kind == "none":
        return None
    if kind == "hf":
        repo = pretrained[len(HF_PREFIX):]
        expected = hub_backbone(repo)
        if expected is not None:  # known before any download
            check_pairing(name, expected, pretrained)
        return hub_weights_file(repo, name)
    if kind in IMAGENET_SOURCES:
        return imagenet_weights_file(name, kind)
    if not os.path.isfile(pretrained):
        raise ModelError("MODEL.PRETRAINED: no such file: %s (expected a .params file saved by "
                         "Gluon or a timm .safetensors file)" % pretrained)
    return pretrained


def load_backbone(name, pretrained, ctx, norm_layer=None, norm_kwargs=None):
    """A GluonCV ResNet classifier `name` with the weights MODEL.PRETRAINED `pretrained` names,
    or random ones (""); its classifier (`fc`) is left as initialised (the trunk drops it).
    `norm_layer`, `norm_kwargs`: GluonCV's, the class (and its arguments) every BatchNorm
    layer is built as (None: nn.BatchNorm)."""
    if name not in BACKBONES:
        raise ModelError("MODEL.BACKBONE must be one of %s, got %r" % (BACKBONES, name))
    path = weights_file(name, pretrained)
    layers = {} if norm_layer is None else {"norm_layer": norm_layer,
                                            "norm_kwargs": dict(norm_kwargs or {})}
    net = get_model(name, pretrained=False, **layers)
    if path is None:
        net.initialize(mx.init.MSRAPrelu(), ctx=ctx)
        return net
    if path.endswith(".safetensors"):
        tensors = read_safetensors(path)
        check_pairing(name, timm_backbone(tensors, path), path)
        arrays = timm_to_gluoncv(tensors)
    else:
        try:
            arrays = mx.nd.load(path)
        except mx.base.MXNetError as exc:
            raise ModelError("MODEL.PRETRAINED: %s is not a %s parameter file saved by Gluon "
                             "(net.save_parameters): %s" % (path, name, error_line(exc))) from exc
        if not isinstance(arrays, dict):
            raise ModelError("MODEL.PRETRAINED: %s holds unnamed arrays; expected a %s parameter "
                             "file saved by Gluon (net.save_parameters)" % (path, name))
    _load_strict(net, name, arrays, path, ctx)
    return net


# ---------------------------------------------------------------- status (environment check)
def _answers(url, timeout):
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 400
    except Exception:  # any failure means "does not answer"; a status check never raises
        return False


def weights_status(cfg, check_source=False, timeout=5):
    """What the config's backbone weights need and whether they are at hand, for the environment
    check. Never raises; returns a dict:

    kind: none | imagenet | imagenet-mxnet | hf | file; pretrained: MODEL.PRETRAINED;
    path: the local file loaded (None for none); cached: whether it exists (True for none);
    source: the URL it is downloaded from (None for none and file); source_ok: whether the
    source answers an HTTP HEAD within `timeout` seconds (None unless check_source and a source);
    problem: a one-line reason the weights cannot be used as configured, or None."""
    pretrained, backbone = cfg.MODEL.PRETRAINED, cfg.MODEL.BACKBONE
    status = {"kind": weights_kind(pretrained), "pretrained": pretrained, "path": None,
              "cached": True, "source": None, "source_ok": None, "problem": None}
    try:
        if status["kind"] == "hf":
            repo = pretrained[len(HF_PREFIX):]
            expected = hub_backbone(repo)
            if expected is not None:
                check_pairing(backbone, expected, pretrained)
            params, record = hub_cache_paths(repo)
            status.update(path=params, cached=_cached_record(params, record) is not None,
                          source="https://huggingface.co/%s/resolve/main/%s" % (repo, HF_FILE))
        elif status["kind"] in IMAGENET_SOURCES:
            file_name = store_file_name(backbone, status["kind"])
            status.update(path=os.path.join(models_dir(), file_name),
                          source=_store_url(file_name))
            status["cached"] = os.path.isfile(status["path"])
        elif status["kind"] == "file":
            status.update(path=pretrained, cached=os.path.isfile(pretrained))
            if not status["cached"]:
                status["problem"] = "MODEL.PRETRAINED: no such file: %s" % pretrained
    except (ModelError, OSError, ValueError) as exc:
        status["problem"] = str(exc)
    if check_source and status["source"]:
        status["source_ok"] = _answers(status["source"], timeout)
    return status
