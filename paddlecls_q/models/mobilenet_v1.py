"""MobileNetV1 as PaddleClas defines it (ppcls/arch/backbone/legendary_models/mobilenet_v1.py)."""

from __future__ import annotations

import paddle
from paddle import ParamAttr, nn
from paddle.nn.initializer import KaimingNormal

# in-channel multiplier base, depthwise filters, pointwise filters, groups, stride of each block.
BLOCKS = [
    (32, 32, 64, 32, 1),
    (64, 64, 128, 64, 2),
    (128, 128, 128, 128, 1),
    (128, 128, 256, 128, 2),
    (256, 256, 256, 256, 1),
    (256, 256, 512, 256, 2),
    (512, 512, 512, 512, 1),
    (512, 512, 512, 512, 1),
    (512, 512, 512, 512, 1),
    (512, 512, 512, 512, 1),
    (512, 512, 512, 512, 1),
    (512, 512, 1024, 512, 2),
    (1024, 1024, 1024, 1024, 1),
]


class ConvBNLayer(nn.Layer):
    """Conv (no bias) + BatchNorm + ReLU."""

    def __init__(
        self, num_channels: int, filter_size: int, num_filters: int, stride: int, padding: int, num_groups: int = 1
    ):
        super().__init__()
        self.conv = nn.Conv2D(
            num_channels,
            num_filters,
            filter_size,
            stride=stride,
            padding=padding,
            groups=num_groups,
            weight_attr=ParamAttr(initializer=KaimingNormal()),
            bias_attr=False,
        )
        self.bn = nn.BatchNorm(num_filters)
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.relu(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Layer):
    """3x3 depthwise ConvBN then 1x1 pointwise ConvBN."""

    def __init__(
        self, num_channels: int, num_filters1: int, num_filters2: int, num_groups: int, stride: int, scale: float
    ):
        super().__init__()
        self.depthwise_conv = ConvBNLayer(
            num_channels, 3, int(num_filters1 * scale), stride, 1, num_groups=int(num_groups * scale)
        )
        self.pointwise_conv = ConvBNLayer(int(num_filters1 * scale), 1, int(num_filters2 * scale), 1, 0)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class MobileNet(nn.Layer):
    """MobileNetV1 with width multiplier `scale`; parameter names match PaddleClas checkpoints."""

    def __init__(self, scale: float = 1.0, class_num: int = 1000):
        super().__init__()
        self.scale = scale
        self.conv = ConvBNLayer(3, 3, int(32 * scale), 2, 1)
        self.blocks = nn.Sequential(
            *[
                DepthwiseSeparable(int(base * scale), filters1, filters2, groups, stride, scale)
                for base, filters1, filters2, groups, stride in BLOCKS
            ]
        )
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.fc = nn.Linear(int(1024 * scale), class_num, weight_attr=ParamAttr(initializer=KaimingNormal()))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(self.flatten(self.avg_pool(self.blocks(self.conv(x)))))


def MobileNetV1(scale: float = 1.0, class_num: int = 1000) -> MobileNet:
    """PaddleClas's `MobileNetV1` (scale 1.0) or its x0.25/x0.5/x0.75 variants."""
    return MobileNet(scale=scale, class_num=class_num)
