"""BatchNorm statistics over groups of images: one GPU reproducing a multi-GPU run.

MXNet's BatchNorm is not synchronised across devices, so the run behind Rank-1 93.1 (4 GPUs x 8
images) normalised every BatchNorm layer over 8 images, not 32. With MODEL.BN_GROUP_SIZE = 8 a
single device does the same: in training, each group of 8 consecutive images of its batch is
normalised with its own mean and variance, and the running statistics move towards the average of
the groups' (what averaging the 4 GPUs' running statistics gives). In inference, and with group
size 0, the layer is MXNet's BatchNorm unchanged. The parameters and their names are those of
nn.BatchNorm, so parameter files load either way.
"""
from mxnet import autograd
from mxnet.gluon import nn


class GroupBatchNorm(nn.BatchNorm):
    """nn.BatchNorm whose training statistics are computed over groups of `group_size` images.

    Hybridized, the mode is fixed when a block's graph is built: the training network
    (ReIDNet, first called under autograd.record) gets the grouped graph, and the feature
    network called on its own for extraction gets MXNet's BatchNorm. The grouped graph needs a
    batch that is a multiple of the group size (config check: the per-device batch)."""

    group_size = 0

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if not self.group_size or not autograd.is_training():
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        eps, momentum = self._kwargs["eps"], self._kwargs["momentum"]
        if self._kwargs["fix_gamma"]:  # scale=False: MXNet's op treats gamma as 1
            gamma = F.ones_like(gamma)
        # (N, C, ...) -> (N/g, g, C, L): statistics per group and channel over (g, L)
        groups = x.reshape((0, 0, -1)).reshape((-4, -1, self.group_size, -2))
        mean, var = F.moments(groups, axes=(1, 3), keepdims=True)  # biased variance, as the op
        centred = F.broadcast_sub(groups, mean)
        scale = F.broadcast_mul(1 / F.sqrt(var + eps), gamma.reshape((1, 1, -1, 1)))
        shift = F.broadcast_add(beta, self._update_running_stats(
            F, mean, var, gamma, beta, running_mean, running_var, eps, momentum))
        out = F.broadcast_add(F.broadcast_mul(centred, scale), shift.reshape((1, 1, -1, 1)))
        return F.reshape_like(out, x)

    def _update_running_stats(self, F, mean, var, gamma, beta, running_mean, running_var, eps,
                              momentum):
        """Move the running statistics towards the groups' average mean and variance.

        A graph cannot assign to parameters, so MXNet's own BatchNorm does it: it runs on two
        rows, mean +/- std, whose batch mean and (biased) variance are exactly those averages.
        MXNet updates running statistics in the backward pass, so its output must reach the
        loss: it is added to the shift as 0 * sum, which changes neither values nor gradients."""
        avg_mean = mean.mean(axis=(0, 1, 3))
        std = F.sqrt(var.mean(axis=(0, 1, 3)))
        rows = F.BlockGrad(F.stack(avg_mean + std, avg_mean - std, axis=0))
        stats = F.BatchNorm(rows, gamma, beta, running_mean, running_var, eps=eps,
                            momentum=momentum, fix_gamma=self._kwargs["fix_gamma"],
                            use_global_stats=False, name="group_stats")
        return F.sum(stats) * 0


def set_bn_group_size(block, group_size):
    """Make every BatchNorm layer of `block` a GroupBatchNorm with `group_size` (0: off).

    Swaps the class of the existing layers (GluonCV builds them), so parameters, their names
    and their values are untouched. Call before the block is hybridized and first run."""
    count = 0
    for child in _blocks(block):
        if isinstance(child, nn.BatchNorm):
            child.__class__ = GroupBatchNorm
            child.group_size = group_size
            count += 1
    return count


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


def training_hybridize_kwargs(cfg):
    """hybridize() arguments for training: static memory, and static shapes unless BatchNorm
    groups are on (MXNet 1.9's static_shape mode skips the running-statistics update of the
    BatchNorm op GroupBatchNorm runs for it; measured, and guarded by tests/test_batchnorm.py)."""
    return {"static_alloc": True, "static_shape": not cfg.MODEL.BN_GROUP_SIZE}
