"""Ablation studies: one knob per run, and their report."""
