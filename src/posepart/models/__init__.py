"""Models: a shared VGG16 trunk with an FCN part-segmentation head and/or OpenPose PAF stages.

    from posepart.models import build_model
    model = build_model("joint_vgg16", schema, stages=2, seg_head="fcn8", width=0.25, fc_width=256)
    out = model(images)          # ModelOutput: out.heatmaps[-1], out.pafs[-1], out.parts[-1]
"""

from .build import (MODELS, MissingLimbsError, SchemaMismatchError, build_model, builder_options, fcn8_vgg16,
                    fcn16_vgg16, fcn32_vgg16, joint_vgg16, paf_vgg16)
from .complexity import count_flops, count_parameters
from .execution import channels_last_, fold_batch_norm
from .fcn import BilinearUpsample, FCNHead, bilinear_kernel
from .joint import PosePartNet
from .output import ModelOutput
from .pose import PAFStage, PAFStages
from .pretrained import load_vgg16_weights, read_state_dict
from .refine import ResidualRefine, SkipRefine
from .trunk import MaxBlurPool, ShapeSpec, VGGTrunk

__all__ = [
    "MODELS", "BilinearUpsample", "FCNHead", "MaxBlurPool", "MissingLimbsError", "ModelOutput", "PAFStage",
    "PAFStages", "PosePartNet", "ResidualRefine", "SchemaMismatchError", "ShapeSpec", "SkipRefine", "VGGTrunk",
    "bilinear_kernel", "build_model", "builder_options", "channels_last_", "count_flops", "count_parameters",
    "fcn8_vgg16", "fcn16_vgg16", "fcn32_vgg16", "fold_batch_norm", "joint_vgg16", "load_vgg16_weights", "paf_vgg16",
    "read_state_dict",
]
