#!/usr/bin/env python
"""Verify (MD5), extract and check a data set's official zip: market1501, dukemtmc, msmt17, cuhk03np.

Examples:
  python scripts/prepare_dataset.py market1501 --out data/market1501 --zip ~/Downloads/Market-1501-v15.09.15.zip
  python scripts/prepare_dataset.py msmt17 --out data/msmt17 --zip ~/Downloads/MSMT17_V1.zip
  python scripts/prepare_dataset.py cuhk03np --out data/cuhk03np --zip cuhk03-np.zip --subset labeled
Only Market-1501 has a download address and a published MD5; for the others the zip's MD5 is
printed (--md5 HEX enforces one). Extraction is all or nothing; a different copy of the set
already in OUT is kept unless --overwrite.
"""
import argparse

from reid_baseline.cli import run
from reid_baseline.data.prepare import ARCHIVES, GIB, prepare_dataset


def main(argv=None):
    """Prepare the data set; bad input raises DatasetError (run() prints it and exits 2)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("name", choices=sorted(ARCHIVES), help="data set")
    parser.add_argument("--out", required=True, help="folder to extract into")
    parser.add_argument("--zip", default=None, help="local copy of the official zip (default: "
                        "OUT/<official zip name>, downloaded if missing and the set has a mirror)")
    parser.add_argument("--url", default=None, help="download URL (default: the set's mirror)")
    parser.add_argument("--md5", default="published",
                        help="expected MD5 of the zip (default: the published one, if any); "
                        "'none' skips the check")
    parser.add_argument("--subset", default="detected", choices=("detected", "labeled"),
                        help="cuhk03np: which boxes to check after extraction")
    parser.add_argument("--no-verify-counts", action="store_true",
                        help="do not require the official image/identity counts")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different copy of the set already in OUT (default: "
                        "refuse, naming it)")
    parser.add_argument("--max-size", type=float, default=None, metavar="GIB",
                        help="largest extracted size to accept, in GiB (default: the set's "
                        "known size with a margin)")
    args = parser.parse_args(argv)
    md5 = None if args.md5.lower() == "none" else args.md5
    options = {"subset": args.subset} if args.name == "cuhk03np" else {}
    dataset = prepare_dataset(args.name, args.out, zip_path=args.zip, url=args.url, md5=md5,
                              verify_counts=not args.no_verify_counts, overwrite=args.overwrite,
                              max_size=None if args.max_size is None else args.max_size * GIB,
                              **options)
    print(dataset.summary())


if __name__ == "__main__":
    run(main)
