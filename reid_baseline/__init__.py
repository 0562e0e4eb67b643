"""reid_baseline: person re-identification baselines with MXNet/GluonCV."""
