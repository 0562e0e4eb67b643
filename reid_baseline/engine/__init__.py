"""Training: the loop and its hooks, solver, checkpoints, run folder, telemetry, devices, workers."""
