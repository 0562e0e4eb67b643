"""Generated data sets in the real layouts, for demos and tests."""
