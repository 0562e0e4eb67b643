"""Multi-process and multi-machine training jobs on MXNet's own launcher."""
