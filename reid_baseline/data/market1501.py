"""Market-1501 records and the image checks, importable from their first home.

The code lives in :mod:`reid_baseline.data.datasets` (one module per data set layout, behind
``load_dataset``); this module keeps ``from reid_baseline.data.market1501 import ...`` working.
"""
from .datasets.base import (DISTRACTOR_PID, JUNK_PID, DatasetError, Record,  # noqa: F401
                            check_image_files, image_problem, read_image, relabel_records)
from .datasets.market1501 import (EXPECTED_COUNTS, FILENAME_PATTERN, ROOT_NAME,  # noqa: F401
                                  SPLIT_DIRS, Market1501, find_root, load_market1501,
                                  parse_filename, parse_split)
