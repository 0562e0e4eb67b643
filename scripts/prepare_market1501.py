#!/usr/bin/env python
"""Verify (MD5), extract and check the official Market-1501-v15.09.15.zip: the same as
``scripts/prepare_dataset.py market1501`` (same options).

Examples:
  python scripts/prepare_market1501.py --out data --zip ~/Downloads/Market-1501-v15.09.15.zip
  python scripts/prepare_market1501.py --out data            # downloads it
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import prepare_dataset  # noqa: E402
from prepare_dataset import run  # noqa: E402


def main(argv=None):
    """prepare_dataset.py market1501 with these arguments."""
    prepare_dataset.main(["market1501"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    run(main)
