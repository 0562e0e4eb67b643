"""BatchNorm statistics over groups of images: one GPU reproducing a multi-GPU run.

MXNet's BatchNorm is not synchronised across devices, so the run behind Rank-1 93.1 (4 GPUs x 8
images) normalised every BatchNorm layer over 8 images, not 32. With MODEL.BN_GROUP_SIZE = 8 a
single device does the same: in training, each group of 8 consecutive images of its batch is
normalised with its own mean and variance, and the running statistics move towards the average of
the groups' (what averaging the 4 GPUs' running statistics gives). In inference, and with group
size 0, the network is built with MXNet's nn.BatchNorm itself. The parameters and their names are
those of nn.BatchNorm, so parameter files load either way. (Ghost BatchNorm is fast-reid's name for
normalising "ghost" batches, Hoffer et al. 2017.)
"""
from mxnet import autograd
from mxnet.gluon import nn


class GhostBatchNorm(nn.BatchNorm):
    """nn.BatchNorm whose training statistics are computed over `num_groups` groups of
    `group_size` consecutive images (the device batch is num_groups x group_size); the other
    keyword arguments are nn.BatchNorm's.

    Each group goes through MXNet's own BatchNorm op, so it is normalised exactly as on a
    device of its own. Hybridized, the mode is fixed when a block's graph is built: the training
    network (ReIDNet, first called under autograd.record) gets the grouped graph, and the
    feature network called on its own for extraction gets MXNet's BatchNorm."""

    def __init__(self, group_size, num_groups, **kwargs):
        super().__init__(**kwargs)
        self.group_size, self.num_groups = group_size, num_groups
        self.pending_update = None  # see attach_running_stat_updates

    def _alias(self):
        # Named as nn.BatchNorm (batchnorm0_gamma, ...): parameter and exported files are alike.
        return "batchnorm"

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if self.num_groups == 1 or not autograd.is_training():  # one group: MXNet's own layer
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        # momentum 1: the groups leave the running statistics as they are; the update below
        # applies their average once, as averaging the devices' running statistics would.
        kwargs = dict(self._kwargs, momentum=1.0, output_mean_var=True)
        parts = F.split(x, num_outputs=self.num_groups, axis=0)
        outs, means, variances = [], [], []
        for part in parts:
            out, mean, inv_std = F.BatchNorm(part, gamma, beta, running_mean, running_var, **kwargs)
            outs.append(out)
            means.append(mean)
            # MXNet's op outputs the inverse standard deviation: 1 / sqrt(var + eps)
            variances.append(1 / F.square(inv_std) - self._kwargs["eps"])
        self.pending_update = self._update_running_stats(
            F, F.add_n(*means) / len(means), F.add_n(*variances) / len(variances),
            gamma, beta, running_mean, running_var, parts[0])
        return F.concat(*outs, dim=0)

    def _update_running_stats(self, F, mean, var, gamma, beta, running_mean, running_var, part):
        """Move the running statistics towards `mean` and `var` with the layer's momentum;
        returns a zero that must reach the output.

        A graph cannot assign to parameters, so MXNet's own BatchNorm does it: it runs on two
        rows, mean +/- std, whose batch mean and (biased) variance are exactly `mean` and `var`.
        MXNet updates running statistics in the backward pass, so its output must reach the
        loss: as the zero 0 * sum, which attach_running_stat_updates adds to the network's
        output (adding it here would cost a pass over the whole activation)."""
        std = F.sqrt(F.relu(var))  # relu: rounding may leave a tiny negative variance
        rows = F.BlockGrad(F.stack(mean + std, mean - std, axis=0))
        if self.gamma.grad_req == "null" and self.beta.grad_req == "null":
            # Nothing of this op would need a gradient, so MXNet would skip its backward pass
            # (and the update): a zero from one image of the input links it to the loss.
            link = F.sum(F.slice_axis(part, axis=0, begin=0, end=1)) * 0
            rows = F.broadcast_add(rows, link.reshape((1, 1)))
        # cudnn_off: cuDNN would track the sample variance, twice the variance on two rows.
        stats = F.BatchNorm(rows, gamma, beta, running_mean, running_var, cudnn_off=True,
                            **self._kwargs)
        return F.sum(stats) * 0


def batchnorm_layer(group_size, device_batch=None):
    """(norm_layer, norm_kwargs) for GluonCV's ResNet constructors and the BatchNorm neck:
    GhostBatchNorm normalising groups of `group_size` images of training batches of
    `device_batch` images, or MXNet's nn.BatchNorm itself for group size 0."""
    if not group_size:
        return nn.BatchNorm, {}
    if not device_batch or device_batch % group_size:
        raise ValueError("group size %d must divide the device batch %r" % (group_size, device_batch))
    return GhostBatchNorm, {"group_size": group_size, "num_groups": device_batch // group_size}


def attach_running_stat_updates(block, F, out):
    """`out` (a 2-D output of `block`) plus the zeros through which the grouped BatchNorm layers
    inside `block` update their running statistics (see GhostBatchNorm._update_running_stats):
    without a path to the loss, MXNet would never run those updates. Call at the end of the
    hybrid_forward of the block that holds them (the feature network)."""
    zeros = []
    for child in _blocks(block):
        if isinstance(child, GhostBatchNorm) and child.pending_update is not None:
            zeros.append(child.pending_update)
            child.pending_update = None  # consumed: never leaks into another graph
    if not zeros:
        return out
    return F.broadcast_add(out, F.add_n(*zeros).reshape((1, 1)))


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)

