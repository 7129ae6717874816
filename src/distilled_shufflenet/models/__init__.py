"""Models: the (2+1)D ShuffleNet student, the 2D / 3D ResNet teachers and X3D, behind one interface.

>>> from distilled_shufflenet.models import create_model, list_models
>>> student = create_model("shufflenet2plus1d", num_classes=101)
>>> taps = student.forward_taps(clip, ("mid", "final"))   # {"mid": (N,256,4,14,14), "final": (N,512,2,7,7)}
"""

from distilled_shufflenet.checkpoint import CheckpointError, load_pretrained
from distilled_shufflenet.models._base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    Preprocess,
    TapInfo,
    TapModel,
    freeze,
)
from distilled_shufflenet.models._registry import ModelCard, create_model, list_models, model_card, register_model
from distilled_shufflenet.models.fuse import fuse_for_inference
from distilled_shufflenet.models.resnet2d import select_frames

# importing the families registers their builders
from distilled_shufflenet.models import student as _student  # noqa: E402,F401
from distilled_shufflenet.models import resnet2d as _resnet2d  # noqa: E402,F401
from distilled_shufflenet.models import resnet3d as _resnet3d  # noqa: E402,F401
from distilled_shufflenet.models import x3d as _x3d  # noqa: E402,F401

__all__ = [
    "CheckpointError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ModelCard",
    "Preprocess",
    "TapInfo",
    "TapModel",
    "create_model",
    "freeze",
    "fuse_for_inference",
    "list_models",
    "load_pretrained",
    "model_card",
    "register_model",
    "select_frames",
]
