"""Settings of the Mask R-CNN's architecture, without torch: read where only the configuration is checked.

:class:`ModelSettings` (the ``model`` config section), :data:`BACKBONES`, :data:`CLASSES`.
:mod:`detachment.cnn.model` re-exports them; the workflow's start-up checks import this module, so a
dry run does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

#: output channels of the last stage of each supported ResNet backbone
BACKBONES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
#: class names by label index
CLASSES = ["background", "particle"]


@dataclass
class ModelSettings:
    """Architecture (``model`` config section); the fields are documented in the config schema.

    Parameters
    ----------
    backbone : str
        ResNet depth, one of :data:`BACKBONES`.
    fpn_channels, box_head_width, mask_head_width : int
        Channels of the FPN levels, width of the box head's two layers, channels of the mask head.
    anchor_sizes : tuple of int
        Anchor side per FPN level (5 levels), px.
    rpn_batch_size_per_image, rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test, \
rpn_post_nms_top_n_test, box_batch_size_per_image, box_detections_per_img : int
        RPN and RoI-head sample and proposal counts per image (torchvision's meaning).
    box_positive_fraction : float
        Share of positives among the RoI head's samples.
    roi_sampling_ratio : int
        RoIAlign samples per bin side (torchvision: 2; on a CPU the single-threaded RoIAlign backward is
        a fifth of a training step at 2, and 1 takes a quarter of the samples).
    tile : int
        Training tile side, px: the transform's ``min_size`` and ``max_size``.
    image_mean, image_std : float
        Normalisation of the grey values (the training tiles' mean and standard deviation).
    context_slices : int
        1: the three input channels are slices z-1, z, z+1 (2.5D); 0: slice z repeated.

    Raises
    ------
    ValueError
        For an unknown backbone, ``context_slices`` other than 0 or 1, or not 5 anchor sizes.
    """

    backbone: str = "resnet18"
    fpn_channels: int = 64
    box_head_width: int = 256
    mask_head_width: int = 64
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    rpn_batch_size_per_image: int = 128
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 500
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.5
    box_detections_per_img: int = 150
    roi_sampling_ratio: int = 2
    tile: int = 128
    image_mean: float = 0.0
    image_std: float = 1.0
    context_slices: int = 0

    def __post_init__(self):
        if self.context_slices not in (0, 1):
            raise ValueError(f"model.context_slices: {self.context_slices!r} is not 0 or 1")
        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone: {self.backbone!r} is not one of {sorted(BACKBONES)}")
        self.anchor_sizes = tuple(int(a) for a in self.anchor_sizes)
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"model.anchor_sizes: need 5 sizes (one per FPN level), got {list(self.anchor_sizes)}")
