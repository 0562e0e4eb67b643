"""Datasets: Market-1501 parsing, preparation and a synthetic toy version."""
