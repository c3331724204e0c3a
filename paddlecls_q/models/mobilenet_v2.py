"""MobileNetV2 as PaddleClas defines it (ppcls/arch/backbone/model_zoo/mobilenet_v2.py)."""

from __future__ import annotations

import paddle
from paddle import nn

# expansion factor t, output channels c, repeats n, stride s of the first repeat (the paper's Table 2).
BOTTLENECKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class ConvBNLayer(nn.Layer):
    """Conv (no bias) + BatchNorm, then ReLU6 unless `if_act` is off (the linear bottleneck)."""

    def __init__(
        self, num_channels: int, filter_size: int, num_filters: int, stride: int, padding: int, num_groups: int = 1
    ):
        super().__init__()
        self._conv = nn.Conv2D(
            num_channels, num_filters, filter_size, stride=stride, padding=padding, groups=num_groups, bias_attr=False
        )
        self._batch_norm = nn.BatchNorm(num_filters)

    def forward(self, x: paddle.Tensor, if_act: bool = True) -> paddle.Tensor:
        y = self._batch_norm(self._conv(x))
        return nn.functional.relu6(y) if if_act else y


class InvertedResidualUnit(nn.Layer):
    """1x1 expand ConvBN, 3x3 depthwise ConvBN, 1x1 linear ConvBN (no activation), + input when `shortcut`.

    PaddleClas keeps the expand conv when the expansion factor is 1 (a 1x1 conv to the same width).
    """

    def __init__(self, num_channels: int, num_filters: int, stride: int, expansion_factor: int):
        super().__init__()
        expanded = int(round(num_channels * expansion_factor))
        self._expand_conv = ConvBNLayer(num_channels, 1, expanded, 1, 0)
        self._bottleneck_conv = ConvBNLayer(expanded, 3, expanded, stride, 1, num_groups=expanded)
        self._linear_conv = ConvBNLayer(expanded, 1, num_filters, 1, 0)

    def forward(self, x: paddle.Tensor, shortcut: bool) -> paddle.Tensor:
        y = self._linear_conv(self._bottleneck_conv(self._expand_conv(x)), if_act=False)
        return paddle.add(x, y) if shortcut else y


class InvresiBlocks(nn.Layer):
    """`n` inverted residual units; the first changes width and stride, the others add their input."""

    def __init__(self, in_c: int, t: int, c: int, n: int, s: int):
        super().__init__()
        self._first_block = InvertedResidualUnit(in_c, c, s, t)
        self._block_list = nn.LayerList([InvertedResidualUnit(c, c, 1, t) for _ in range(1, n)])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self._first_block(x, shortcut=False)
        for block in self._block_list:
            y = block(y, shortcut=True)
        return y


class MobileNet(nn.Layer):
    """MobileNetV2 with width multiplier `scale`; layer names follow PaddleClas's definition."""

    def __init__(self, scale: float = 1.0, class_num: int = 1000):
        super().__init__()
        self.scale = scale
        self.conv1 = ConvBNLayer(3, 3, int(32 * scale), 2, 1)
        in_c = int(32 * scale)
        blocks = []
        for t, c, n, s in BOTTLENECKS:
            blocks.append(InvresiBlocks(in_c, t, int(c * scale), n, s))
            in_c = int(c * scale)
        self.block_list = nn.LayerList(blocks)
        self.out_c = int(1280 * scale) if scale > 1.0 else 1280
        self.conv9 = ConvBNLayer(in_c, 1, self.out_c, 1, 0)
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.out = nn.Linear(self.out_c, class_num)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.conv1(x)
        for block in self.block_list:
            y = block(y)
        y = self.pool2d_avg(self.conv9(y))
        return self.out(paddle.flatten(y, start_axis=1, stop_axis=-1))


def MobileNetV2(scale: float = 1.0, class_num: int = 1000) -> MobileNet:
    """PaddleClas's `MobileNetV2` (scale 1.0) or its x0.25 ... x2.0 variants."""
    return MobileNet(scale=scale, class_num=class_num)
