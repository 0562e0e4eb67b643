"""reid_baseline: a strong person re-identification baseline with Gluon/MXNet and GluonCV."""
import os

from setuptools import find_packages, setup

# CPU MXNet by default; REID_MXNET=mxnet-cu112 installs the CUDA 11.2 build instead (never
# both: they are the same module). See README, "GPU install".
MXNET = os.environ.get("REID_MXNET", "mxnet")
if MXNET not in ("mxnet", "mxnet-cu112"):
    raise SystemExit("REID_MXNET must be mxnet or mxnet-cu112, got %r" % MXNET)

# MXNet 1.9.1 needs numpy < 1.24 (np.bool); the rest is pinned to versions tested with it on
# Python 3.11.
INSTALL_REQUIRES = [
    MXNET + "==1.9.1",
    "numpy==1.23.5",
    "scipy>=1.7,<1.12",
    "pandas<2.1",
    "matplotlib<3.9",
    "gluoncv==0.10.5.post0",
    "opencv-python-headless>=4.5,<4.12",
    "Pillow>=9,<14",
    "tqdm>=4.60",
    "PyYAML>=5.4",
    "yacs>=0.1.8",
]

setup(
    name="reid_baseline",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["reid_baseline", "reid_baseline.*"]),
    python_requires=">=3.8,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7,<10"]},
)
