"""Every knob of reid_baseline, documented next to its default, and the values each may take.

The defaults are the recipe of docs/RECIPE.md (ResNet-50, one softmax loss, Market-1501
Rank-1 93.1 / mAP 80.3). An experiment is a YAML file that overrides some of them; an ablation
is a YAML file that changes exactly one. scripts/config_reference.py renders docs/CONFIG.md from
this file: a knob's comment is the one on its line, or the comment lines right above it.
"""
from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------- data
_C.DATASETS = CN()
_C.DATASETS.ROOT = "data/market1501"  # Market-1501 root, or the folder holding Market-1501-v15.09.15/
_C.DATASETS.VERIFY_COUNTS = True  # check image/identity counts against the official ones
_C.DATASETS.NAME = "market1501"  # training set layout: market1501 | dukemtmc | msmt17 | cuhk03np | folder
_C.DATASETS.TEST_NAME = ""  # query/gallery set layout ("": DATASETS.NAME); cross-dataset tests
_C.DATASETS.TEST_ROOT = ""  # root of the query/gallery set ("": DATASETS.ROOT)
_C.DATASETS.CUHK03_SUBSET = "detected"  # CUHK03-NP boxes (for cuhk03np sets): detected | labeled
_C.DATASETS.ALLOW_OUTSIDE_ROOT = False  # a folder set's CSV list may name images outside its folder

_C.INPUT = CN()
_C.INPUT.HEIGHT = 384  # network input height (recipe: 384 instead of 256)
_C.INPUT.WIDTH = 128  # network input width
_C.INPUT.FLIP_PROB = 0.5  # training horizontal flip probability (0 disables)
_C.INPUT.PAD = 10  # zero-pad every side by this many px, then random-crop back (0 disables)
_C.INPUT.ERASING_PROB = 0.0  # random erasing probability; off in the code that produced 93.1
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]  # ImageNet mean (RGB, 0-1 scale)
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]  # ImageNet std

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # decoding/augmenting processes (0: in the main process)
# Keep training images in RAM after their first decode: none | decoded (as read) | resized
# (at INPUT.HEIGHT x INPUT.WIDTH).
_C.DATALOADER.CACHE = "none"

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
# GluonCV ResNet: resnet{18,34,50,101,152}_v1 (stride on the 1x1 convolution) or _v1b (on the
# 3x3), resnet{50,101,152}_v1c/_v1d/_v1s (v1b with a deep stem; docs/WEIGHTS.md).
_C.MODEL.BACKBONE = "resnet50_v1"
# Backbone weights (docs/WEIGHTS.md): "imagenet" (GluonCV's model store; its resnet50_v1 has 77.36%
# ImageNet top-1), "imagenet-mxnet" (MXNet's model zoo, resnet*_v1 only; its resnet50_v1, 76.47%,
# is what the run behind 93.1 started from), "hf:<owner>/<repo>" (a timm ResNet on the Hugging
# Face Hub, e.g. hf:timm/resnet50.gluon_in1k for resnet50_v1b), a .params or timm .safetensors
# file, or "" (random). Downloads are kept in ~/.mxnet/models ($MXNET_HOME/models).
_C.MODEL.PRETRAINED = "imagenet"
_C.MODEL.LAST_STRIDE = 1  # stride of the last ResNet stage (1: 24x8 map at 384x128; 2: ImageNet)
_C.MODEL.POOLING = "avg"  # global pooling of the feature map: avg | max | avgmax (sum of both)
_C.MODEL.BN_BETA = False  # BatchNorm on the feature with a shift (the recipe has none)
_C.MODEL.BN_GAMMA = True  # BatchNorm on the feature with a scale (the reference keeps it)
_C.MODEL.FEAT_ACTIVATION = "none"  # activation on the feature: none | relu
_C.MODEL.CLASSIFIER_BIAS = False  # bias in the identity classifier (the recipe has none)
# Training BatchNorm statistics over groups of this many consecutive images of each device's
# batch, as that many images per GPU would give (MXNet's BatchNorm is not synchronised: the run
# behind 93.1 trained on 4 GPUs x 8 images). 0: the whole device batch. Must divide it.
_C.MODEL.BN_GROUP_SIZE = 0

# ---------------------------------------------------------------------------- training
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "adam"  # adam | sgd (sgd uses SOLVER.MOMENTUM)
_C.SOLVER.BASE_LR = 3.5e-4  # one learning rate for every layer
_C.SOLVER.WEIGHT_DECAY = 5e-4  # L2 weight decay (the reference code's)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum; unused by Adam
_C.SOLVER.BATCH_SIZE = 32  # images per iteration, over all devices
_C.SOLVER.MAX_EPOCHS = 80  # total epochs
_C.SOLVER.WARMUP_EPOCHS = 10  # linear warm-up epochs; the last one reaches BASE_LR (0 disables)
_C.SOLVER.WARMUP_FACTOR = 0.01  # warm-up starts at BASE_LR * WARMUP_FACTOR (3.5e-6)
_C.SOLVER.STEPS = [35, 60]  # epochs at which the learning rate is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1  # learning-rate decay factor
_C.SOLVER.SEED = 613  # random seed (the reference's)
_C.SOLVER.LOG_PERIOD = 20  # iterations between reads of loss/accuracy from the device
_C.SOLVER.CHECKPOINT_PERIOD = 10  # epochs between checkpoints (the last epoch is always saved)
_C.SOLVER.KEEP_CHECKPOINTS = 2  # newest checkpoints kept on disk (older ones deleted; 0 keeps all)
_C.SOLVER.EVAL_PERIOD = 0  # epochs between query/gallery evaluations (0: only via evaluate.py)
# Collapse guard: stop (like the NaN guard) when the running mean loss exceeds this many times an
# untrained classifier's loss ln(num_classes); 0 disables. The write-up warns the recipe "can
# suddenly collapse"; a healthy run stays below ln(num_classes) after its first iterations.
_C.SOLVER.COLLAPSE_FACTOR = 3.0
_C.SOLVER.HYBRIDIZE = True  # hybridize with static_alloc/static_shape
# Gradient aggregation (MXNet kvstore): device (one machine, the default) | local | nccl |
# dist_sync | dist_device_sync (one worker of a job started by MXNet's launcher, DMLC_* env).
_C.SOLVER.KVSTORE = "device"
_C.SOLVER.AMP = "none"  # mixed precision (mxnet.contrib.amp): none | float16 (GPU) | bfloat16 (CPU)
_C.SOLVER.TENSORBOARD = False  # TensorBoard scalars in OUTPUT_DIR/tensorboard (tensorboard extra; viewer: GETTING_STARTED.md)

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.BATCH_SIZE = 128  # images per feature-extraction batch
_C.TEST.FLIP_FEATURES = True  # average the features of the image and of its horizontal flip
_C.TEST.NORMALIZE_FEATURES = True  # L2-normalise features before the distance
_C.TEST.DISTANCE = "cosine"  # cosine | euclidean
_C.TEST.AP_MODE = "trapezoid"  # trapezoid (official Market-1501 code) | noninterp (torchreid)
_C.TEST.RERANK = False  # k-reciprocal re-ranking (Zhong et al. 2017), on euclidean distances
_C.TEST.RERANK_K1 = 20  # size of the k-reciprocal neighbourhood
_C.TEST.RERANK_K2 = 6  # neighbours averaged in the local query expansion (1: none)
_C.TEST.RERANK_LAMBDA = 0.3  # weight of the original distance against the Jaccard distance

# ---------------------------------------------------------------------------- run
# Devices: "auto" (GPU 0 when this MXNet has CUDA and sees a GPU, else the CPU, saying so in one
# line on stderr), GPU ids, e.g. [0, 1] (each batch is split over them), or [] (the CPU; --gpus "").
_C.GPUS = "auto"
_C.OUTPUT_DIR = "runs/market1501"  # checkpoints, logs, metrics and the resolved config

# The allowed values of every knob that is one of a few words or numbers.
CHOICES = {
    "MODEL.POOLING": ("avg", "max", "avgmax"),
    "MODEL.FEAT_ACTIVATION": ("none", "relu"),
    "MODEL.LAST_STRIDE": (1, 2),
    "SOLVER.OPTIMIZER": ("adam", "sgd"),
    "SOLVER.KVSTORE": ("device", "local", "nccl", "dist_sync", "dist_device_sync"),
    "SOLVER.AMP": ("none", "float16", "bfloat16"),
    "DATALOADER.CACHE": ("none", "decoded", "resized"),
    "DATASETS.NAME": ("market1501", "dukemtmc", "msmt17", "cuhk03np", "folder"),
    "DATASETS.TEST_NAME": ("", "market1501", "dukemtmc", "msmt17", "cuhk03np", "folder"),
    "DATASETS.CUHK03_SUBSET": ("detected", "labeled"),
    "TEST.DISTANCE": ("cosine", "euclidean"),
    "TEST.AP_MODE": ("trapezoid", "noninterp"),
}

# The range of every numeric knob: key -> (test, what the value must be). A bad value fails
# here with the key's name, not later as a traceback from inside the network or a worker.
RANGES = {
    # The backbone halves the input five times; 16 px still leaves a 1x1 feature map.
    "INPUT.HEIGHT": (lambda v: v >= 16, ">= 16"),
    "INPUT.WIDTH": (lambda v: v >= 16, ">= 16"),
    "INPUT.FLIP_PROB": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "INPUT.PAD": (lambda v: v >= 0, ">= 0"),
    "INPUT.ERASING_PROB": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "INPUT.PIXEL_MEAN": (lambda v: len(v) == 3 and all(0 <= x <= 1 for x in v),
                         "3 numbers (R, G, B) in [0, 1]"),
    "INPUT.PIXEL_STD": (lambda v: len(v) == 3 and all(x > 0 for x in v), "3 numbers (R, G, B) > 0"),
    "DATALOADER.NUM_WORKERS": (lambda v: v >= 0, ">= 0"),
    "SOLVER.BASE_LR": (lambda v: v > 0, "> 0"),
    "SOLVER.WEIGHT_DECAY": (lambda v: v >= 0, ">= 0"),
    "SOLVER.MOMENTUM": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "SOLVER.BATCH_SIZE": (lambda v: v >= 1, ">= 1"),
    "SOLVER.MAX_EPOCHS": (lambda v: v >= 1, ">= 1"),
    "SOLVER.WARMUP_EPOCHS": (lambda v: v >= 0, ">= 0"),
    "SOLVER.WARMUP_FACTOR": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "SOLVER.GAMMA": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "SOLVER.SEED": (lambda v: 0 <= v < 2 ** 32, "in [0, 2**32) (NumPy's seed range)"),
    "SOLVER.LOG_PERIOD": (lambda v: v >= 1, ">= 1"),
    "SOLVER.CHECKPOINT_PERIOD": (lambda v: v >= 1, ">= 1"),
    "SOLVER.KEEP_CHECKPOINTS": (lambda v: v >= 0, ">= 0"),
    "SOLVER.EVAL_PERIOD": (lambda v: v >= 0, ">= 0"),
    "SOLVER.COLLAPSE_FACTOR": (lambda v: v == 0 or v > 1, "0 (off) or > 1"),
    "MODEL.BN_GROUP_SIZE": (lambda v: v == 0 or v >= 2, "0 (the whole device batch) or >= 2"),
    "MODEL.PRETRAINED": (lambda v: v in ("", "imagenet", "imagenet-mxnet")
                         or (v.startswith("hf:") and v.count("/") == 1 and " " not in v)
                         or v.endswith((".params", ".safetensors")),
                         '"", imagenet, imagenet-mxnet, hf:<owner>/<repo>, or a .params or '
                         '.safetensors file'),
    "TEST.BATCH_SIZE": (lambda v: v >= 1, ">= 1"),
    "TEST.RERANK_K1": (lambda v: v >= 1, ">= 1"),
    "TEST.RERANK_K2": (lambda v: v >= 1, ">= 1"),
    "TEST.RERANK_LAMBDA": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "GPUS": (lambda v: v == "auto" or (all(i >= 0 for i in v) and len(set(v)) == len(v)),
             '"auto" or distinct GPU ids >= 0'),
}


def get_defaults():
    """A fresh, mutable copy of the defaults (the recipe)."""
    return _C.clone()
