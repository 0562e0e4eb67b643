"""The ReID network: a GluonCV ResNet trunk, global pooling, a BatchNorm neck, a classifier.

Recipe (docs/RECIPE.md, "Network"): last stage stride 1, the pooled 2048-d vector is the feature, a
BatchNorm on it without beta, no activation, a bias-free classifier with one output per identity.
"""
import os
import sys

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from ..config import device_batch
from ..errors import ModelError
from .ghost_batchnorm import attach_running_stat_updates, batchnorm_layer
from .pretrained import load_backbone


class Embedding(HybridBlock):
    """Image -> retrieval feature: ResNet trunk, global pooling, BatchNorm neck, optional ReLU."""

    def __init__(self, trunk, feat_dim, pooling="avg", bn_beta=False, bn_gamma=True,
                 activation="none", norm_layer=nn.BatchNorm, norm_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self._activation = activation
        with self.name_scope():
            self.trunk = trunk
            self.avgpool = nn.GlobalAvgPool2D() if pooling in ("avg", "avgmax") else None
            self.maxpool = nn.GlobalMaxPool2D() if pooling in ("max", "avgmax") else None
            self.bn = norm_layer(center=bn_beta, scale=bn_gamma, in_channels=feat_dim,
                                 **(norm_kwargs or {}))

    def hybrid_forward(self, F, x):
        fmap = self.trunk(x)
        if self.maxpool is None:
            feat = self.avgpool(fmap)
        elif self.avgpool is None:
            feat = self.maxpool(fmap)
        else:  # avgmax: the sum keeps the feature dimension
            feat = self.avgpool(fmap) + self.maxpool(fmap)
        feat = self.bn(F.flatten(feat))
        if self._activation == "relu":
            feat = F.relu(feat)
        return attach_running_stat_updates(self, F, feat)


class ReIDNet(HybridBlock):
    """Returns (logits, feature) so one hybridized graph serves the softmax loss and retrieval.

    `net.embedding` alone gives the feature (feature extraction, export). With
    MODEL.BN_GROUP_SIZE, a hybridized ReIDNet keeps the BatchNorm mode of its first call, so the
    engine calls it only for training and extraction always goes through `net.embedding`."""

    def __init__(self, embedding, feat_dim, num_classes, classifier_bias=False, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.embedding = embedding
            self.classifier = nn.Dense(num_classes, use_bias=classifier_bias, in_units=feat_dim)

    def hybrid_forward(self, F, x):
        feat = self.embedding(x)
        return self.classifier(feat), feat


def _trunk_of(net):
    """The convolutional stages of a GluonCV ResNet classifier (no pooling, no fc)."""
    if hasattr(net, "features"):  # resnet*_v1: features = stem, 4 stages, GlobalAvgPool2D
        layers = list(net.features)[:-1]
    else:  # resnet*_v1b: named children
        layers = [net.conv1, net.bn1, net.relu, net.maxpool,
                  net.layer1, net.layer2, net.layer3, net.layer4]
    trunk = nn.HybridSequential(prefix="")
    trunk.add(*layers)
    return trunk


def set_last_stride(trunk, stride):
    """Set the stride of the down-sampling convolutions of the last stage's first block.

    GluonCV has no option for it, so we edit the conv's stride before the graph is built. In
    v1d the down-sampling branch strides with an average pool (pool size = stride) instead."""
    changed = 0
    for layer in _strided_layers(trunk[-1][0]):
        if max(layer._kwargs["stride"]) > 1:
            layer._kwargs["stride"] = (stride, stride)
            if isinstance(layer, nn.AvgPool2D):
                layer._kwargs["kernel"] = (stride, stride)
            changed += 1
    if changed != 2:
        raise ModelError("expected 2 strided layers in the last stage, found %d" % changed)


def _strided_layers(block):
    if isinstance(block, (nn.Conv2D, nn.AvgPool2D)):
        yield block
    for child in block._children.values():
        yield from _strided_layers(child)


def build_model(cfg, num_classes, ctx=mx.cpu()):
    """The ReID network of the config, initialised on `ctx` (a context or a list of them).

    Every BatchNorm, the trunk's and the neck's, is built as MODEL.BN_GROUP_SIZE asks
    (ghost_batchnorm.py). Head initialisation follows the reference: BatchNorm gamma 1,
    classifier weights N(0, 0.001)."""
    norm_layer, norm_kwargs = batchnorm_layer(cfg.MODEL.BN_GROUP_SIZE, device_batch(cfg))
    backbone = load_backbone(cfg.MODEL.BACKBONE, cfg.MODEL.PRETRAINED, ctx,
                             norm_layer=norm_layer, norm_kwargs=norm_kwargs)
    trunk = _trunk_of(backbone)
    set_last_stride(trunk, cfg.MODEL.LAST_STRIDE)
    dim = feature_dim(cfg)
    embedding = Embedding(trunk, dim, pooling=cfg.MODEL.POOLING, bn_beta=cfg.MODEL.BN_BETA,
                          bn_gamma=cfg.MODEL.BN_GAMMA, activation=cfg.MODEL.FEAT_ACTIVATION,
                          norm_layer=norm_layer, norm_kwargs=norm_kwargs, prefix="embedding_")
    net = ReIDNet(embedding, dim, num_classes, classifier_bias=cfg.MODEL.CLASSIFIER_BIAS, prefix="reid_")
    embedding.bn.initialize(ctx=ctx)
    net.classifier.initialize(mx.init.Normal(0.001), ctx=ctx)
    return net


def load_trained_model(cfg, params_path, ctx=mx.cpu()):
    """The network of `cfg` with the embedding parameters train.py saved (model_final.params
    or a checkpoint's model.params), hybridized per config, for features and export.

    Only `net.embedding` is loaded: the classifier is not needed for features, so a file
    trained with another MODEL.CLASSIFIER_BIAS (or another number of identities) loads; its
    classifier parameters are ignored and `net.classifier` is an untrained placeholder. A
    line on stderr names the ignored parameters when they are not what this config's
    classifier would have. Every embedding parameter must be in the file with its shape."""
    if not os.path.isfile(params_path):
        raise ModelError("params file %s: no such file" % params_path)
    try:
        saved = mx.nd.load(params_path)
    except mx.base.MXNetError as exc:
        raise ModelError("params file %s is not an MXNet parameter file" % params_path) from exc
    if not isinstance(saved, dict):
        raise ModelError("params file %s holds unnamed arrays; expected parameters saved by "
                         "train.py (model_final.params or checkpoints/*/model.params)"
                         % params_path)
    # The backbone weights come from the file: no ImageNet download.
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.PRETRAINED = ""
    net = build_model(cfg, 1, ctx)
    # Gluon 1.x has no public load-from-dict with structural names: these two private calls
    # are what Block.load_parameters does (and _load_init completes deferred shapes).
    wanted = net.embedding._collect_params_with_prefix("embedding")
    model = ("this config builds MODEL.BACKBONE %s with MODEL.POOLING %s, MODEL.BN_BETA %s, "
             "MODEL.BN_GAMMA %s; evaluate with the config.yaml saved in the training run"
             % (cfg.MODEL.BACKBONE, cfg.MODEL.POOLING, cfg.MODEL.BN_BETA, cfg.MODEL.BN_GAMMA))
    for name, param in wanted.items():
        found = saved.get(name)
        if found is None or not _shape_fits(param.shape, found.shape):
            problem = ("has no parameter %s" % name if found is None else "has %s with shape %s, "
                       "the model expects %s" % (name, found.shape, param.shape))
            raise ModelError("params file %s does not fit the model of this config: the file %s (%s)"
                             % (params_path, problem, model))
    extra = sorted(n for n in saved if n.startswith("embedding.") and n not in wanted)
    if extra:
        raise ModelError("params file %s does not fit the model of this config: the file has "
                         "%d embedding parameters the model lacks, e.g. %s (%s)"
                         % (params_path, len(extra), extra[0], model))
    _check_values(params_path, {name: saved[name] for name in wanted})
    # A BatchNorm without scale (or shift) ignores the value of its gamma (beta): a trained one
    # in the file would be dropped silently and give other features.
    for name, knob, fixed in (("embedding.bn.gamma", "MODEL.BN_GAMMA", 1.0),
                              ("embedding.bn.beta", "MODEL.BN_BETA", 0.0)):
        if not cfg.MODEL[knob.split(".")[1]] and (saved[name] != fixed).sum().asscalar():
            raise ModelError("params file %s was trained with %s True (its %s is not all %g), but "
                             "this config has %s False (%s)" % (params_path, knob, name, fixed,
                                                                knob, model))
    for name, param in wanted.items():
        param._load_init(saved[name], ctx)
    ignored = [n for n in saved if n not in wanted]
    own_classifier = {"classifier.weight"} | ({"classifier.bias"} if cfg.MODEL.CLASSIFIER_BIAS
                                              else set())
    if set(ignored) - own_classifier:
        print("note: ignored %d parameter%s of %s not needed for features: %s"
              % (len(ignored), "s" if len(ignored) > 1 else "", params_path, ", ".join(ignored)),
              file=sys.stderr)
    if cfg.SOLVER.HYBRIDIZE:
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def _check_values(params_path, arrays):
    """ModelError naming the file and its first parameter that is not float32 (a file cast to
    another precision) or holds NaN or infinity (it would give NaN features)."""
    for name, array in arrays.items():
        if array.dtype != np.float32:
            raise ModelError("params file %s: parameter %s is %s, expected float32 (parameters "
                             "saved by train.py)" % (params_path, name, np.dtype(array.dtype).name))
    for name, array in arrays.items():
        if not np.isfinite(array.asnumpy()).all():
            raise ModelError("params file %s: parameter %s holds NaN or infinity; the model "
                             "cannot give features (use an earlier checkpoint)"
                             % (params_path, name))


def _shape_fits(expected, found):
    # 0 is a dimension Gluon infers at the first forward pass (deferred initialisation)
    return len(expected) == len(found) and all(e in (0, f)
                                               for e, f in zip(expected, found, strict=True))


def feature_dim(cfg):
    """Length of the retrieval feature: 512 for ResNet-18/34, 2048 for the bottleneck ResNets."""
    return 512 if cfg.MODEL.BACKBONE.startswith(("resnet18_", "resnet34_")) else 2048
