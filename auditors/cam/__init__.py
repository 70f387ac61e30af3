"""Batched class-activation maps at the cost of one forward pass.

Public API: :class:`CamEngine` (``compute``, ``compute_topk``, ``compute_classes``),
:class:`CamBatch`, :class:`TopkCamBatch`, :data:`METHODS`, :func:`find_target_layer`,
:func:`detect_target`, :func:`resolve_target`, :func:`get_module`, :func:`vit_reshape_transform`, :func:`nhwc_to_nchw`,
:func:`detect_gap_linear_head`.
"""

from auditors.cam._validation import CamParameterError
from auditors.cam.engine import AMP_MODES, ENGINE_METHODS, GRADIENT_SOURCES, METHODS, CamBatch, CamEngine, TopkCamBatch
from auditors.cam.head import GapLinearHead, detect_gap_linear_head
from auditors.cam.layers import RESHAPE_MODES, detect_target, find_target_layer, get_module, resolve_target, vit_grid
from auditors.cam.reshape import nhwc_to_nchw, vit_reshape_transform

__all__ = [
    "CamEngine",
    "CamBatch",
    "TopkCamBatch",
    "METHODS",
    "ENGINE_METHODS",
    "RESHAPE_MODES",
    "resolve_target",
    "vit_grid",
    "AMP_MODES",
    "GRADIENT_SOURCES",
    "CamParameterError",
    "GapLinearHead",
    "detect_gap_linear_head",
    "find_target_layer",
    "detect_target",
    "get_module",
    "vit_reshape_transform",
    "nhwc_to_nchw",
]
