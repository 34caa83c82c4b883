"""Models: dilated ResNet backbones (C5 / DC5 / DC4 / HDC rates), Faster R-CNN, its RPN / RoI
matchers (IoU, NWD, RFLA), and the receptive-field, gridding, effective-receptive-field and
anchor-coverage analyses."""

from .anchor_coverage import anchor_coverage, format_anchor_coverage
from .backbone import ResNetBackbone, build_backbone, build_resnet
from .detector import NativeSizeTransform, build_detector, count_parameters
from .erf import effective_receptive_field, plot_erf
from .gridding import coverage, plot_coverage
from .hdc import HDCError, HDCVerdict, check_hdc
from .info import format_info, model_info
from .matchers import (
    NWDSimilarity,
    RFLARegionProposalNetwork,
    SimilarityRoIHeads,
    box_nwd,
    match_anchors,
    rfla_assign,
)
from .norm import convert_sync_batchnorm, get_norm_layer
from .receptive_field import (
    dilated_stack,
    feature_receptive_fields,
    receptive_field,
    stage_receptive_fields,
)
from .weights import WeightsError, load_resnet_weights

__all__ = [
    "HDCError",
    "HDCVerdict",
    "NWDSimilarity",
    "NativeSizeTransform",
    "RFLARegionProposalNetwork",
    "ResNetBackbone",
    "SimilarityRoIHeads",
    "WeightsError",
    "anchor_coverage",
    "box_nwd",
    "build_backbone",
    "build_resnet",
    "build_detector",
    "check_hdc",
    "convert_sync_batchnorm",
    "count_parameters",
    "coverage",
    "dilated_stack",
    "effective_receptive_field",
    "feature_receptive_fields",
    "format_anchor_coverage",
    "format_info",
    "get_norm_layer",
    "load_resnet_weights",
    "match_anchors",
    "model_info",
    "plot_coverage",
    "plot_erf",
    "receptive_field",
    "rfla_assign",
    "stage_receptive_fields",
]
