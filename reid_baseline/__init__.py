"""reid_baseline: person re-identification baselines with MXNet/GluonCV."""

__all__ = ["ReIDModel"]


def __getattr__(name):
    # ReIDModel is imported on first use: `import reid_baseline` stays light (no MXNet).
    if name == "ReIDModel":
        from .api import ReIDModel
        return ReIDModel
    raise AttributeError("module 'reid_baseline' has no attribute %r" % name)
