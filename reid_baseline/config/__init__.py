"""The config: every knob with its default (defaults.py) and loading, merging and checking
(loading.py). Loading a config imports neither MXNet nor GluonCV."""
from ..environment import device_batch, device_count, worker_count
from ..errors import ConfigError
from .defaults import CHOICES, RANGES, get_defaults
from .loading import ablation_changes, flatten, load_config, save_config

__all__ = ["CHOICES", "RANGES", "ConfigError", "ablation_changes", "device_batch", "device_count",
           "flatten", "get_defaults", "load_config", "save_config", "worker_count"]
