"""Evaluation: features, distances, re-ranking, the ranking protocol (CMC, mAP, mINP), plots."""
