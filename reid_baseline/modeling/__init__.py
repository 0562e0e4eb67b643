"""The network: ResNet trunk, pooling, BatchNorm neck, classifier; backbones and ImageNet weights."""
