"""Training: the loop and its hooks, solver, checkpoints, run folder, telemetry, devices, the
process group of a distributed job, the pre-training check."""
