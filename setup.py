"""reid_baseline: a strong person re-identification baseline with Gluon/MXNet and GluonCV."""
from setuptools import find_packages, setup

# MXNet is an extra, never a plain requirement, so installing the package never replaces an
# MXNet that is already there (GluonCV's convention: the user picks the build). The CUDA builds
# and the CPU build are the same `mxnet` module: install exactly one. See docs/GPU.md.
MXNET_BUILDS = {
    "cpu": ["mxnet==1.9.1"],
    "cu112": ["mxnet-cu112==1.9.1"],  # CUDA 11.2: GPUs of compute capability 5.0 to 8.6
    "cu117": ["mxnet-cu117==1.9.1"],  # CUDA 11.7: the same GPUs, newer driver
}

# Compatible ranges; constraints.txt pins the exact set the tests pass with (install with
# `-c constraints.txt`).
INSTALL_REQUIRES = [
    "numpy>=1.21,<1.24",  # MXNet 1.9.1 uses np.bool, removed in numpy 1.24
    "scipy>=1.7,<1.12",
    "pandas>=1.3,<2.1",  # GluonCV imports it; later releases need a newer numpy
    "matplotlib>=3.5,<3.9",
    "gluoncv>=0.7,<0.11",  # 0.7 (NGC's MXNet container) to 0.10: same model zoo API
    "opencv-python>=4.5,<4.12",  # GluonCV requires this distribution; 4.12 needs numpy 2
    "Pillow>=9.1,<14",
    "tqdm>=4.50",
    "PyYAML>=5.4",
    "yacs>=0.1.8",
    "threadpoolctl>=3.0",  # scripts/doctor.py reads numpy's BLAS kernel with it
    # ImageNet weights that can still be downloaded (MODEL.PRETRAINED hf:...): the Hub client
    # and the pickle-free safetensors reader (numpy only, no PyTorch).
    "huggingface_hub>=0.23,<3",
    "safetensors>=0.4",
]

# scripts/export_model.py --format onnx: mx.onnx (MXNet 1.9.1) uses onnx.mapping, deprecated in
# onnx 1.13 and since removed, so onnx 1.14;
# onnxruntime 1.18.1: the first release for Python 3.11 that accepts numpy 1.23.5 (1.15-1.17
# require numpy >= 1.24.2);
# protobuf 4.x has the compiled (upb) backend: 3.20 is pure Python on 3.11, 7x slower export.
EXPORT_REQUIRES = ["onnx==1.14.1", "onnxruntime==1.18.1", "protobuf==4.25.3"]
FAISS_REQUIRES = ["faiss-cpu==1.8.0.post1"]  # later releases need numpy 2
TENSORBOARD_REQUIRES = ["tensorboardX==2.6.5", "protobuf>=3.20"]  # constraints: protobuf 4.25.3
# ruff: the linter CI runs (rules in ruff.toml), pinned as its releases add rules;
# pytest-xdist: the suite runs in two processes (`-n 2`), one per core.
TEST_REQUIRES = (["pytest==9.2.0", "pytest-timeout==2.4.0", "pytest-xdist==3.8.0", "ruff==0.17.6"]
                 + EXPORT_REQUIRES
                 + FAISS_REQUIRES + TENSORBOARD_REQUIRES)

setup(
    name="reid_baseline",
    version="0.1.0",
    description=__doc__,
    license="Apache-2.0",
    packages=find_packages(include=["reid_baseline", "reid_baseline.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require=dict(
        MXNET_BUILDS, export=EXPORT_REQUIRES, faiss=FAISS_REQUIRES,
        tensorboard=TENSORBOARD_REQUIRES,
        test=sorted(set(TEST_REQUIRES), key=TEST_REQUIRES.index)),
)
