"""The GluonCV ResNets the package builds, their layouts, and timm's names for them: which
backbone a timm ResNet (a Hub repository or a .safetensors file) is, and its tensors under
GluonCV's parameter names. Pure numpy: no MXNet, no PyTorch, no pickle."""
import re

from ..errors import ModelError, error_line

# v1: stride on the 1x1 convolution (MXNet stores only); v1b: on the 3x3 (torchvision, timm);
# v1c: v1b with a deep 3x3 stem; v1d: v1c with average-pool down-sampling; v1s: a 64-wide deep stem.
BACKBONES = ("resnet18_v1", "resnet34_v1", "resnet50_v1", "resnet101_v1", "resnet152_v1",
             "resnet18_v1b", "resnet34_v1b", "resnet50_v1b", "resnet101_v1b", "resnet152_v1b",
             "resnet50_v1c", "resnet101_v1c", "resnet152_v1c", "resnet50_v1d", "resnet101_v1d",
             "resnet152_v1d", "resnet50_v1s", "resnet101_v1s", "resnet152_v1s")
LAYOUTS = {"v1": "stride on the 1x1 convolution", "v1b": "stride on the 3x3 convolution",
           "v1c": "stride on the 3x3 convolution, deep stem",
           "v1d": "stride on the 3x3 convolution, deep stem, average-pool down-sampling",
           "v1s": "stride on the 3x3 convolution, 64-wide deep stem"}

HF_PREFIX = "hf:"

_TIMM_ARCH = re.compile(r"^resnet(18|34|50|101|152)([cds]?)$")
_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34,
           ("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
           ("bottleneck", (3, 8, 36, 3)): 152}


def hub_backbone(repo):
    """The GluonCV backbone of a timm Hub repository's architecture (the name before the first
    dot: resnet50 -> resnet50_v1b, resnet50d -> resnet50_v1d), or None if the name says nothing."""
    match = _TIMM_ARCH.match(repo.rsplit("/", 1)[-1].split(".")[0])
    return match and "resnet%s_v1%s" % (match.group(1), match.group(2) or "b")


def timm_backbone(tensors, origin):
    """The GluonCV backbone whose layout the timm ResNet `tensors` have (block type and count,
    stem, down-sampling); ModelError naming `origin` when they are no ResNet GluonCV builds."""
    stages = []
    for stage in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in tensors if k.startswith("layer%d." % stage)}
        stages.append(len(blocks))
    block = "bottleneck" if "layer1.0.conv3.weight" in tensors else "basic"
    depth = _DEPTHS.get((block, tuple(stages)))
    deep = "conv1.0.weight" in tensors
    if depth is None or not (deep or "conv1.weight" in tensors):
        raise ModelError("MODEL.PRETRAINED: %s is not a ResNet-18/34/50/101/152 in timm's layout "
                         "(%s blocks per stage %s, %s)" % (origin, block, stages,
                                                          "deep stem" if deep else "stem conv1"))
    if not deep:
        variant = "b"
    elif "layer2.0.downsample.2.weight" in tensors:
        variant = "d"
    else:
        variant = "s" if tensors["conv1.0.weight"].shape[0] == 64 else "c"
    name = "resnet%d_v1%s" % (depth, variant)
    if name not in BACKBONES:
        raise ModelError("MODEL.PRETRAINED: %s holds a ResNet-%d with %s, a layout GluonCV does "
                         "not build (no %s)" % (origin, depth, LAYOUTS["v1" + variant], name))
    return name


def check_pairing(backbone, found, origin):
    """A one-line ModelError unless the weights of `origin` (layout `found`) fit `backbone`."""
    if found in (None, backbone):  # None: a record or name that does not say
        return
    hint = ""
    if backbone.endswith("_v1"):
        hint = (" (%s has no Hugging Face Hub weights: its ImageNet weights exist only in the "
                "MXNet stores, MODEL.PRETRAINED imagenet or imagenet-mxnet)" % backbone)
    raise ModelError("MODEL.PRETRAINED %s holds %s weights (%s), MODEL.BACKBONE is %s (%s): set "
                     "MODEL.BACKBONE %s%s" % (origin, found, LAYOUTS[found.split("_")[1]],
                                              backbone, LAYOUTS[backbone.split("_")[1]], found,
                                              hint))


def timm_to_gluoncv(tensors):
    """timm's ResNet parameter names -> GluonCV ResNetV1b's, classifier dropped.

    The two name their modules alike (conv1, bn1, layerN.M.convK/bnK, downsample.I, the deep
    stem's conv1.I); they differ in BatchNorm's names (weight/bias -> gamma/beta) and timm keeps
    a step counter per BatchNorm that inference does not use."""
    converted = {}
    for name, value in tensors.items():
        if name.startswith("fc.") or name.endswith(".num_batches_tracked"):
            continue
        if value.ndim == 1 and name.endswith(".weight"):
            name = name[:-len("weight")] + "gamma"
        elif value.ndim == 1 and name.endswith(".bias"):
            name = name[:-len("bias")] + "beta"
        converted[name] = value
    return converted


def read_safetensors(path):
    """The tensors of a .safetensors file as numpy arrays (no pickle, no PyTorch)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError("MODEL.PRETRAINED: %s is not a readable .safetensors file (corrupt or "
                         "truncated?): %s" % (path, error_line(exc))) from exc
