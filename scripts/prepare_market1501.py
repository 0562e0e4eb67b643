#!/usr/bin/env python
"""Verify (MD5), extract and check the official Market-1501-v15.09.15.zip.

Examples:
  python scripts/prepare_market1501.py --out data --zip ~/Downloads/Market-1501-v15.09.15.zip
  python scripts/prepare_market1501.py --out data            # downloads from the mirror
"""
import argparse


from reid_baseline.cli import run
from reid_baseline.data.prepare import (MARKET1501_MD5, MARKET1501_URL,
                                        prepare_market1501)


def main(argv=None):
    """Prepare the data set; bad input raises DatasetError (run() prints it and exits 2)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--out", required=True, help="folder to extract into")
    parser.add_argument("--zip", default=None, help="local copy of Market-1501-v15.09.15.zip "
                        "(default: OUT/Market-1501-v15.09.15.zip, downloaded if missing)")
    parser.add_argument("--url", default=MARKET1501_URL, help="download URL")
    parser.add_argument("--md5", default=MARKET1501_MD5,
                        help="expected MD5 of the zip; 'none' skips the check")
    parser.add_argument("--no-verify-counts", action="store_true",
                        help="do not require the official image/identity counts")
    args = parser.parse_args(argv)
    md5 = None if args.md5.lower() == "none" else args.md5
    dataset = prepare_market1501(args.out, zip_path=args.zip, url=args.url, md5=md5,
                                 verify_counts=not args.no_verify_counts)
    print(dataset.summary())


if __name__ == "__main__":
    run(main)
