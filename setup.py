"""reid_baseline: a strong person re-identification baseline with Gluon/MXNet and GluonCV."""
import os

from setuptools import find_packages, setup

# CPU MXNet by default; REID_MXNET=mxnet-cu112 installs the CUDA 11.2 build instead (never
# both: they are the same module). See README, "GPU install".
MXNET = os.environ.get("REID_MXNET", "mxnet")
if MXNET not in ("mxnet", "mxnet-cu112"):
    raise SystemExit("REID_MXNET must be mxnet or mxnet-cu112, got %r" % MXNET)

# MXNet 1.9.1 needs numpy < 1.24 (np.bool). Every dependency is pinned to the version the
# test suite passes with on Python 3.11 (the CI machine).
INSTALL_REQUIRES = [
    MXNET + "==1.9.1",
    "numpy==1.23.5",
    "scipy==1.11.4",
    "pandas==2.0.3",  # gluoncv imports it
    "matplotlib==3.8.4",  # gluoncv imports it
    "gluoncv==0.10.5.post0",
    "opencv-python-headless==4.11.0.86",
    "Pillow==13.0.0",
    "tqdm==4.70.1",
    "PyYAML==6.0.4",
    "yacs==0.1.8",
]

# scripts/export_model.py --format onnx: mx.onnx (MXNet 1.9.1) uses onnx.mapping, deprecated in
# onnx 1.13 and since removed, so onnx 1.14;
# onnxruntime 1.18.1: the first release for Python 3.11 that accepts numpy 1.23.5 (1.15-1.17
# require numpy >= 1.24.2);
# protobuf 4.x has the compiled (upb) backend: 3.20 is pure Python on 3.11, 7x slower export.
EXPORT_REQUIRES = ["onnx==1.14.1", "onnxruntime==1.18.1", "protobuf==4.25.3"]

setup(
    name="reid_baseline",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["reid_baseline", "reid_baseline.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={"export": EXPORT_REQUIRES, "test": ["pytest==9.2.0"] + EXPORT_REQUIRES},
)
