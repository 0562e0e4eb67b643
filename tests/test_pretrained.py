"""Backbone weights: timm .safetensors files (local or from the Hub) compute, once converted, what
timm's network computes; wrong pairings and damaged files are one-line errors; the MXNet stores'
failures name the alternatives; weights_status for the environment check. No network."""
import hashlib
import json
import os

import huggingface_hub
import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model
from gluoncv.model_zoo import model_store as gluoncv_store
from mxnet.gluon.model_zoo import model_store as mxnet_store
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import save_file

from reid_baseline.config import load_config
from reid_baseline.errors import ModelError, OutputError
from reid_baseline.modeling import pretrained
from reid_baseline.modeling.network import build_model

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------- timm's ResNet, independently
# timm's ResNet (= torchvision's, "v1b": stride on the 3x3 convolution) written from its
# definition, in float64 numpy: the network the converted weights must reproduce.
def conv(x, w, stride=1):
    pad = w.shape[2] // 2
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)


def bn(x, t, name):  # inference: running statistics, eps 1e-5 (PyTorch's default)
    shape = (1, -1, 1, 1)
    return ((x - t[name + ".running_mean"].reshape(shape))
            / np.sqrt(t[name + ".running_var"].reshape(shape) + 1e-5)
            * t[name + ".weight"].reshape(shape) + t[name + ".bias"].reshape(shape))


def relu(x):
    return np.maximum(x, 0)


def max_pool_3x3_s2(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(4, 5))


def avg_pool(x, k):  # even sizes here: ceil_mode and count_include_pad do not matter
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))


def block(x, t, name, stride, bottleneck, avg_down):
    if bottleneck:
        out = relu(bn(conv(x, t[name + ".conv1.weight"]), t, name + ".bn1"))
        out = relu(bn(conv(out, t[name + ".conv2.weight"], stride), t, name + ".bn2"))
        out = bn(conv(out, t[name + ".conv3.weight"]), t, name + ".bn3")
    else:
        out = relu(bn(conv(x, t[name + ".conv1.weight"], stride), t, name + ".bn1"))
        out = bn(conv(out, t[name + ".conv2.weight"]), t, name + ".bn2")
    down = name + ".downsample"
    if avg_down and down + ".1.weight" in t:
        shortcut = bn(conv(avg_pool(x, stride), t[down + ".1.weight"]), t, down + ".2")
    elif down + ".0.weight" in t:
        shortcut = bn(conv(x, t[down + ".0.weight"], stride), t, down + ".1")
    else:
        shortcut = x
    return relu(out + shortcut)


def timm_trunk(x, t, blocks, last_stride):
    """Feature map of timm's ResNet (conv1 ... layer4, no pooling) for tensors `t`."""
    if "conv1.0.weight" in t:  # deep stem: three 3x3 convolutions
        x = relu(bn(conv(x, t["conv1.0.weight"], 2), t, "conv1.1"))
        x = relu(bn(conv(x, t["conv1.3.weight"]), t, "conv1.4"))
        x = conv(x, t["conv1.6.weight"])
    else:
        x = conv(x, t["conv1.weight"], 2)
    x = max_pool_3x3_s2(relu(bn(x, t, "bn1")))
    bottleneck = "layer1.0.conv3.weight" in t
    avg_down = "layer2.0.downsample.2.weight" in t
    for stage, (count, stride) in enumerate(zip(blocks, (1, 2, 2, last_stride), strict=True), 1):
        for i in range(count):
            x = block(x, t, "layer%d.%d" % (stage, i), stride if i == 0 else 1, bottleneck,
                      avg_down)
    return x


ARCHS = {  # timm name -> blocks per stage, bottleneck, deep-stem width (0: 7x7 stem), avg_down
    "resnet18": ((2, 2, 2, 2), False, 0, False),
    "resnet50": ((3, 4, 6, 3), True, 0, False),
    "resnet50c": ((3, 4, 6, 3), True, 32, False),
    "resnet50d": ((3, 4, 6, 3), True, 32, True),
    "resnet50s": ((3, 4, 6, 3), True, 64, False),
}


def timm_tensors(arch, seed=0):
    """Random weights with timm's names, non-trivial BatchNorm statistics and an ImageNet head."""
    blocks, bottleneck, stem_width, avg_down = ARCHS[arch]
    rng = np.random.RandomState(seed)
    t = {}

    def add_conv(name, cin, cout, k):
        t[name] = (rng.randn(cout, cin, k, k) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)

    def add_bn(name, c, scale=(0.5, 1.5)):
        t[name + ".weight"] = rng.uniform(*scale, size=c).astype(np.float32)
        t[name + ".bias"] = rng.uniform(-0.2, 0.2, size=c).astype(np.float32)
        t[name + ".running_mean"] = rng.uniform(-0.3, 0.3, size=c).astype(np.float32)
        t[name + ".running_var"] = rng.uniform(0.3, 3.0, size=c).astype(np.float32)
        t[name + ".num_batches_tracked"] = np.array(1000, dtype=np.int64)

    if stem_width:
        add_conv("conv1.0.weight", 3, stem_width, 3)
        add_bn("conv1.1", stem_width)
        add_conv("conv1.3.weight", stem_width, stem_width, 3)
        add_bn("conv1.4", stem_width)
        add_conv("conv1.6.weight", stem_width, 2 * stem_width, 3)
        inplanes = 2 * stem_width
    else:
        add_conv("conv1.weight", 3, 64, 7)
        inplanes = 64
    add_bn("bn1", inplanes)
    expansion = 4 if bottleneck else 1
    for stage, count in enumerate(blocks, 1):
        planes = 64 * 2 ** (stage - 1)
        for i in range(count):
            name = "layer%d.%d" % (stage, i)
            if bottleneck:
                add_conv(name + ".conv1.weight", inplanes, planes, 1)
                add_conv(name + ".conv2.weight", planes, planes, 3)
                add_conv(name + ".conv3.weight", planes, planes * 4, 1)
                add_bn(name + ".bn1", planes)
                add_bn(name + ".bn2", planes)
                add_bn(name + ".bn3", planes * 4, scale=(0.1, 0.3))  # keeps the sums bounded
            else:
                add_conv(name + ".conv1.weight", inplanes, planes, 3)
                add_conv(name + ".conv2.weight", planes, planes, 3)
                add_bn(name + ".bn1", planes)
                add_bn(name + ".bn2", planes, scale=(0.1, 0.3))
            if i == 0 and (stage > 1 or inplanes != planes * expansion):
                index = 1 if avg_down else 0  # downsample.0 is timm's AvgPool2d there
                add_conv(name + ".downsample.%d.weight" % index, inplanes, planes * expansion, 1)
                add_bn(name + ".downsample.%d" % (index + 1), planes * expansion)
            inplanes = planes * expansion
    t["fc.weight"] = rng.randn(1000, inplanes).astype(np.float32) * 0.01
    t["fc.bias"] = np.zeros(1000, np.float32)
    return t


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("timm") / "resnet50.safetensors")
    save_file(timm_tensors("resnet50"), path)
    return path


def _cfg(*overrides):
    return load_config(None, ["MODEL.PRETRAINED", ""] + list(overrides))


def _trunk_output(net, x):
    return net.embedding.trunk(mx.nd.array(x)).asnumpy()


def _assert_close(ours, reference):
    assert ours.shape == reference.shape
    assert np.abs(reference).max() > 0.1  # the comparison is not between near-zero maps
    assert np.abs(ours - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())


# ---------------------------------------------------------------- conversion equals the source
@pytest.mark.parametrize("arch, backbone, last_stride", [
    ("resnet50", "resnet50_v1b", 1), ("resnet18", "resnet18_v1b", 2),
    ("resnet50c", "resnet50_v1c", 1), ("resnet50d", "resnet50_v1d", 2),
    ("resnet50d", "resnet50_v1d", 1), ("resnet50s", "resnet50_v1s", 1)])
def test_converted_trunk_computes_what_timm_computes(tmp_path, arch, backbone, last_stride):
    tensors = timm_tensors(arch, seed=1)
    path = str(tmp_path / (arch + ".safetensors"))
    save_file(tensors, path)
    net = build_model(_cfg("MODEL.BACKBONE", backbone, "MODEL.PRETRAINED", path,
                           "MODEL.LAST_STRIDE", str(last_stride)), num_classes=5)
    x = np.random.RandomState(2).uniform(-2, 2, size=(2, 3, 64, 32))
    reference = timm_trunk(x, {k: v.astype(np.float64) for k, v in tensors.items()},
                           ARCHS[arch][0], last_stride)
    _assert_close(_trunk_output(net, x), reference)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("backbone", ["resnet50_v1", "resnet50_v1d", "resnet101_v1b"])
def test_wrong_backbone_for_the_file_is_a_one_line_error(resnet50_file, backbone):
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.BACKBONE", backbone, "MODEL.PRETRAINED", resnet50_file), 3)
    message = str(err.value)
    assert "\n" not in message and resnet50_file in message
    assert "holds resnet50_v1b weights" in message
    assert "set MODEL.BACKBONE resnet50_v1b" in message
    assert ("has no Hugging Face Hub weights" in message) == (backbone == "resnet50_v1")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty MXNET_HOME and a Hub client serving `hub.files[repo]` (a local file), counting
    its calls; a repository without a file fails like an offline client."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))

    class Hub:
        files, calls = {}, []

        @staticmethod
        def download(repo_id, filename, **kwargs):
            Hub.calls.append((repo_id, filename))
            if repo_id not in Hub.files:
                raise OSError("Cannot reach https://huggingface.co: offline")
            return Hub.files[repo_id]

    Hub.files, Hub.calls = {}, []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", Hub.download)
    return Hub


@pytest.mark.parametrize("repo, backbone, right", [
    ("timm/resnet50.gluon_in1k", "resnet50_v1", "resnet50_v1b"),
    ("timm/resnet50.tv_in1k", "resnet50_v1", "resnet50_v1b"),
    ("timm/resnet50d.gluon_in1k", "resnet50_v1b", "resnet50_v1d"),
    ("timm/resnet50c.gluon_in1k", "resnet50_v1b", "resnet50_v1c"),
    ("timm/resnet101s.gluon_in1k", "resnet50_v1b", "resnet101_v1s")])
def test_hub_model_of_another_layout_fails_before_downloading(hub, repo, backbone, right):
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.BACKBONE", backbone, "MODEL.PRETRAINED", "hf:" + repo), 3)
    message = str(err.value)
    assert message.startswith("MODEL.PRETRAINED hf:%s holds %s weights" % (repo, right))
    assert message.count("set MODEL.BACKBONE %s" % right) == 1 and "\n" not in message
    assert hub.calls == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_or_truncated_safetensors_is_a_one_line_error(resnet50_file, tmp_path, damage):
    data = open(resnet50_file, "rb").read()
    path = tmp_path / "damaged.safetensors"
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x07" * 4096,
                      "empty": b""}[damage])
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b", "MODEL.PRETRAINED", str(path)), 3)
    assert str(err.value).startswith("MODEL.PRETRAINED: %s is not a readable .safetensors file"
                                     % path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, expected", [
    ("missing", "has no tensor for layer3.2.bn2.running_var (MODEL.BACKBONE resnet50_v1b)"),
    ("misshapen", "has layer2.1.conv2.weight with shape (128, 128, 1, 1), MODEL.BACKBONE "
                  "resnet50_v1b expects (128, 0, 3, 3)"),
    ("extra", "has 1 tensors MODEL.BACKBONE resnet50_v1b lacks, e.g. layer1.0.se.fc1.weight")])
def test_missing_extra_or_misshapen_tensor_is_named(tmp_path, change, expected):
    tensors = timm_tensors("resnet50")
    if change == "missing":
        del tensors["layer3.2.bn2.running_var"]
    elif change == "misshapen":
        tensors["layer2.1.conv2.weight"] = np.zeros((128, 128, 1, 1), np.float32)
    else:
        tensors["layer1.0.se.fc1.weight"] = np.zeros((16, 256, 1, 1), np.float32)
    path = str(tmp_path / "changed.safetensors")
    save_file(tensors, path)
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b", "MODEL.PRETRAINED", path), 3)
    assert str(err.value) == "MODEL.PRETRAINED: %s %s" % (path, expected)


def test_not_a_resnet_is_an_error(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"embeddings.weight": np.zeros((4, 4), np.float32)}, path)
    with pytest.raises(ModelError, match="other.safetensors is not a ResNet-18/34/50/101/152 in "
                                         "timm's layout"):
        build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b", "MODEL.PRETRAINED", path), 3)


# ---------------------------------------------------------------- the Hub download and its cache
def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_hub_download_is_converted_cached_and_recorded(hub, resnet50_file, tmp_path):
    # where huggingface_hub keeps a download: snapshots/<commit>/model.safetensors
    snapshot = tmp_path / "hub" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    served = str(snapshot / "model.safetensors")
    with open(resnet50_file, "rb") as src, open(served, "wb") as dst:
        dst.write(src.read())
    hub.files["timm/resnet50.gluon_in1k"] = served
    cfg = _cfg("MODEL.BACKBONE", "resnet50_v1b", "MODEL.PRETRAINED", "hf:timm/resnet50.gluon_in1k")
    status = pretrained.weights_status(cfg)
    models = tmp_path / "mxnet_home" / "models"
    assert status["kind"] == "hf" and status["cached"] is False and status["problem"] is None
    assert status["path"] == str(models / "hf-timm--resnet50.gluon_in1k.params")
    assert status["source"] == ("https://huggingface.co/timm/resnet50.gluon_in1k/resolve/main/"
                                "model.safetensors")

    x = np.random.RandomState(3).uniform(-2, 2, size=(1, 3, 64, 32))
    first = _trunk_output(build_model(cfg, 3), x)
    assert hub.calls == [("timm/resnet50.gluon_in1k", "model.safetensors")]
    record = json.loads((models / "hf-timm--resnet50.gluon_in1k.json").read_text())
    assert record == {"source": "hf:timm/resnet50.gluon_in1k",
                      "file": "model.safetensors", "revision": "0123abcd",
                      "backbone": "resnet50_v1b", "safetensors_sha256": _sha256(served),
                      "params_sha256": _sha256(status["path"])}
    assert pretrained.weights_status(cfg)["cached"] is True

    second = _trunk_output(build_model(cfg, 3), x)  # from the cache: no second download
    assert len(hub.calls) == 1
    np.testing.assert_array_equal(first, second)
    local = _trunk_output(build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b", "MODEL.PRETRAINED",
                                           resnet50_file), 3), x)
    np.testing.assert_array_equal(first, local)

    # a damaged cache is noticed (SHA-256) and rebuilt from the source
    with open(status["path"], "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)
    assert pretrained.weights_status(cfg)["cached"] is False
    np.testing.assert_array_equal(_trunk_output(build_model(cfg, 3), x), first)
    assert len(hub.calls) == 2


def test_hub_cache_never_replaces_a_users_file(hub, resnet50_file, tmp_path):
    hub.files["timm/resnet50.gluon_in1k"] = resnet50_file
    models = tmp_path / "mxnet_home" / "models"
    models.mkdir(parents=True)
    (models / "hf-timm--resnet50.gluon_in1k.params").write_bytes(b"a user's file")
    with pytest.raises(Exception, match="params exists and is not a file the package wrote"):
        build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b",
                         "MODEL.PRETRAINED", "hf:timm/resnet50.gluon_in1k"), 3)
    assert (models / "hf-timm--resnet50.gluon_in1k.params").read_bytes() == b"a user's file"


def test_a_full_disk_while_caching_hub_weights_is_one_line_and_no_cut_file(hub, resnet50_file,
                                                                         tmp_path, monkeypatch):
    hub.files["timm/resnet50.gluon_in1k"] = resnet50_file

    def full_disk_save(path, arrays):  # MXNet's writer: some bytes out, then its own error
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
        raise mx.base.MXNetError("[12:00:00] src/io/local_filesys.cc:166: Check failed: "
                                 "No space left on device")
    monkeypatch.setattr(pretrained.mx.nd, "save", full_disk_save)
    with pytest.raises(OutputError) as err:
        build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b",
                         "MODEL.PRETRAINED", "hf:timm/resnet50.gluon_in1k"), 3)
    params = tmp_path / "mxnet_home" / "models" / "hf-timm--resnet50.gluon_in1k.params"
    assert str(err.value).startswith("cannot write %s: " % params)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(str(params.parent))) == []  # no cut file, no record, no temporary


def test_hub_offline_is_a_one_line_error_naming_the_file(hub):
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b",
                         "MODEL.PRETRAINED", "hf:timm/resnet50.gluon_in1k"), 3)
    assert str(err.value) == (
        "MODEL.PRETRAINED hf:timm/resnet50.gluon_in1k: could not download model.safetensors "
        "from the Hugging Face Hub: Cannot reach https://huggingface.co: offline. Offline? "
        "Download https://huggingface.co/timm/resnet50.gluon_in1k/resolve/main/model.safetensors "
        "on a connected machine and set MODEL.PRETRAINED to its path")


# ---------------------------------------------------------------- ImageNet weights from the stores
# MODEL.PRETRAINED -> the store our code asks, the zoo whose network wrote its files, the file
# name of resnet50_v1's weights and the command that fetches them on a connected machine.
STORES = {
    "imagenet": (gluoncv_store, get_model, "resnet50_v1-cc729d95.params",
                 "python -c \"import gluoncv; gluoncv.model_zoo.get_model('resnet50_v1', "
                 "pretrained=True)\""),
    "imagenet-mxnet": (mxnet_store, mx.gluon.model_zoo.vision.get_model,
                       "resnet50_v1-0aee57f9.params",
                       "python -c \"import mxnet; mxnet.gluon.model_zoo.vision.get_model("
                       "'resnet50_v1', pretrained=True)\""),
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty MXNET_HOME and no network: every store download raises OSError and is recorded."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    monkeypatch.delenv("MXNET_GLUON_REPO", raising=False)
    calls = []

    def download(url, *args, **kwargs):
        calls.append(url)
        raise OSError("Temporary failure in name resolution")

    for store, _, _, _ in STORES.values():
        monkeypatch.setattr(store, "download", download)
    return calls


@pytest.mark.parametrize("source", STORES)
def test_imagenet_weights_of_each_store_load_into_the_backbone(offline, monkeypatch, tmp_path,
                                                               source):
    store, zoo_get_model, file_name, _ = STORES[source]
    # The file as the store keeps it: saved from that zoo's own resnet50_v1, under the store's
    # name for it in $MXNET_HOME/models. The sha1 check is the only thing faked.
    zoo_net = zoo_get_model("resnet50_v1")
    zoo_net.initialize()
    zoo_net(mx.nd.zeros((1, 3, 32, 32)))
    for param in zoo_net.collect_params().values():  # BatchNorm statistics too
        param.set_data(mx.nd.random.uniform(0.5, 1.5, shape=param.shape))
    models = tmp_path / "mxnet_home" / "models"
    models.mkdir(parents=True)
    zoo_net.save_parameters(str(models / file_name))
    monkeypatch.setattr(store, "check_sha1", lambda path, sha1: True)
    cfg = _cfg("MODEL.PRETRAINED", source)
    assert pretrained.weights_status(cfg)["cached"] is True

    net = build_model(cfg, num_classes=7)
    saved = mx.nd.load(str(models / file_name))
    trunk = net.embedding.trunk._collect_params_with_prefix()
    # Every convolution and BatchNorm of the file's feature extractor, and only those, is in
    # the trunk with the file's values (the classifier "output" is the ImageNet head we drop).
    assert {"features." + name for name in trunk} == {n for n in saved if n.startswith("features.")}
    for name, param in trunk.items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved["features." + name].asnumpy())
    assert offline == []  # found locally: no download tried


@pytest.mark.parametrize("source", STORES)
def test_failed_store_download_names_the_file_and_the_alternatives(offline, tmp_path, source):
    _, _, file_name, command = STORES[source]
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.PRETRAINED", source, "MODEL.BACKBONE", "resnet50_v1"),
                    num_classes=3)
    message = str(err.value)
    # the store did try to download that file (it fetches <name>.zip and unpacks it)
    assert [url.rsplit("/", 1)[1] for url in offline] == [file_name.replace(".params", ".zip")]
    assert message.startswith("MODEL.PRETRAINED %s: could not get %s" % (source, file_name))
    assert "name resolution" in message and command in message
    assert "unreliable since MXNet's retirement (2023)" in message
    assert "copy %s" % file_name in message
    assert "into %s;" % (tmp_path / "mxnet_home" / "models") in message
    assert "MXNET_GLUON_REPO to a mirror serving gluon/models/%s" % file_name.replace(
        ".params", ".zip") in message
    assert "configs/market1501_v1b.yml" in message and "hf:timm/resnet50.gluon_in1k" in message
    other = [f for s, (_, _, f, _) in STORES.items() if s != source][0]
    assert other not in message and "\n" not in message


def test_store_download_uses_the_mirror(offline, monkeypatch):
    monkeypatch.setenv("MXNET_GLUON_REPO", "https://mirror.example.org/mxnet")
    with pytest.raises(ModelError):
        build_model(_cfg("MODEL.PRETRAINED", "imagenet"), num_classes=3)
    assert offline == ["https://mirror.example.org/mxnet/gluon/models/resnet50_v1-cc729d95.zip"]


def test_mxnet_zoo_has_no_v1b_weights():
    with pytest.raises(ModelError) as err:
        build_model(_cfg("MODEL.PRETRAINED", "imagenet-mxnet", "MODEL.BACKBONE", "resnet50_v1b"),
                    num_classes=3)
    assert str(err.value) == (
        "MODEL.PRETRAINED imagenet-mxnet: MXNet's model zoo has no ImageNet weights for "
        "resnet50_v1b, only for resnet18_v1, resnet34_v1, resnet50_v1, resnet101_v1, "
        "resnet152_v1; MODEL.PRETRAINED imagenet has them")


# ---------------------------------------------------------------- weights_status
def test_status_of_each_kind_of_weights(offline, monkeypatch, tmp_path, resnet50_file):
    models = str(tmp_path / "mxnet_home" / "models")
    status = pretrained.weights_status(_cfg())
    assert status == {"kind": "none", "pretrained": "", "path": None, "cached": True,
                      "source": None, "source_ok": None, "problem": None}
    status = pretrained.weights_status(_cfg("MODEL.PRETRAINED", "imagenet-mxnet"))
    assert status["path"] == os.path.join(models, "resnet50_v1-0aee57f9.params")
    assert status["cached"] is False and status["problem"] is None
    assert status["source"] == ("https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"
                                "gluon/models/resnet50_v1-0aee57f9.zip")
    status = pretrained.weights_status(_cfg("MODEL.PRETRAINED", resnet50_file))
    assert (status["kind"], status["cached"], status["source"]) == ("file", True, None)
    status = pretrained.weights_status(_cfg("MODEL.PRETRAINED", "hf:timm/resnet50.gluon_in1k"))
    assert status["problem"].startswith("MODEL.PRETRAINED hf:timm/resnet50.gluon_in1k holds "
                                        "resnet50_v1b weights")
    status = pretrained.weights_status(_cfg("MODEL.PRETRAINED", str(tmp_path / "gone.params")))
    assert status["cached"] is False and "no such file" in status["problem"]
    assert offline == []  # a status never downloads


def test_status_source_check_never_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    # port 9 (discard) on the loopback interface: refused at once, no network involved
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://127.0.0.1:9/")
    status = pretrained.weights_status(_cfg("MODEL.PRETRAINED", "imagenet"), check_source=True,
                                       timeout=2)
    assert status["source"] == "http://127.0.0.1:9/gluon/models/resnet50_v1-cc729d95.zip"
    assert status["source_ok"] is False and status["cached"] is False
    assert pretrained.weights_status(_cfg(), check_source=True)["source_ok"] is None


# ---------------------------------------------------------------- the knob and the v1b config
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_v1b_config_is_the_recipe_but_for_the_backbone_and_its_weights():
    v1b = load_config(os.path.join(ROOT, "configs", "market1501_v1b.yml"))
    recipe = load_config(os.path.join(ROOT, "configs", "market1501.yml"))
    differ = {key for key in ("MODEL", "INPUT", "SOLVER", "TEST", "DATASETS", "DATALOADER")
              for knob in v1b[key] if v1b[key][knob] != recipe[key][knob]}
    assert differ == {"MODEL"}
    assert {k for k in v1b.MODEL if v1b.MODEL[k] != recipe.MODEL[k]} == {"BACKBONE", "PRETRAINED"}
    assert (v1b.MODEL.BACKBONE, v1b.MODEL.PRETRAINED) == ("resnet50_v1b",
                                                          "hf:timm/resnet50.gluon_in1k")
    assert v1b.OUTPUT_DIR != recipe.OUTPUT_DIR
    status = pretrained.weights_status(v1b)
    assert status["kind"] == "hf" and status["problem"] is None


@pytest.mark.parametrize("value", ["imagenet1k", "hf:resnet50", "hf:timm/a/b", "weights.bin"])
def test_pretrained_knob_rejects_what_no_loader_reads(value):
    from reid_baseline.errors import ConfigError
    with pytest.raises(ConfigError, match="MODEL.PRETRAINED must be \"\", imagenet, "
                                          "imagenet-mxnet, hf:<owner>/<repo>, or a .params or "
                                          ".safetensors file, got '%s'" % value):
        _cfg("MODEL.PRETRAINED", value)
