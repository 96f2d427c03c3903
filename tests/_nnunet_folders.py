"""What the tests' tiny nnU-Net-format model folders share (nnInteractive, TotalSegmentator).

A two-stage ``PlainConvUNet`` with 4 and 8 features and no normalisation: the smallest network
``plans.json`` can describe that nnU-Net's own builder accepts, so a CPU forward pass takes
milliseconds. Each test writes it into its package's exact folder layout with seeded weights.
"""

from __future__ import annotations

from typing import Any

TINY_PLAIN_UNET: dict[str, Any] = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 2,
        "features_per_stage": [4, 8],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 2]],
        "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
        "conv_bias": True,
        "norm_op": None,
        "norm_op_kwargs": None,
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}
