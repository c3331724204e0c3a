"""ResNet50_vd as PaddleClas defines it (ppcls/arch/backbone/legendary_models/resnet.py, version "vd")."""

from __future__ import annotations

import math

import paddle
from paddle import ParamAttr, nn
from paddle.nn.initializer import Uniform

BLOCK_DEPTH = [3, 4, 6, 3]
NUM_FILTERS = [64, 128, 256, 512]
STAGE_IN_CHANNELS = [64, 256, 512, 1024]


class ConvBNLayer(nn.Layer):
    """Conv (no bias) + BatchNorm (+ ReLU); in vd mode a 2x2 avg pool does the striding instead of the conv."""

    def __init__(
        self,
        num_channels: int,
        num_filters: int,
        filter_size: int,
        stride: int = 1,
        is_vd_mode: bool = False,
        act: str | None = None,
    ):
        super().__init__()
        self.is_vd_mode = is_vd_mode
        self.act = act
        self.avg_pool = nn.AvgPool2D(kernel_size=2, stride=stride, padding="SAME", ceil_mode=True)
        self.conv = nn.Conv2D(
            num_channels,
            num_filters,
            filter_size,
            stride=1 if is_vd_mode else stride,
            padding=(filter_size - 1) // 2,
            bias_attr=False,
        )
        self.bn = nn.BatchNorm(num_filters)
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.is_vd_mode:
            x = self.avg_pool(x)
        x = self.bn(self.conv(x))
        return self.relu(x) if self.act else x


class BottleneckBlock(nn.Layer):
    """1x1 -> 3x3 (strided) -> 1x1 x4, plus identity or projection shortcut."""

    def __init__(self, num_channels: int, num_filters: int, stride: int, shortcut: bool = True, if_first: bool = False):
        super().__init__()
        self.conv0 = ConvBNLayer(num_channels, num_filters, 1, act="relu")
        self.conv1 = ConvBNLayer(num_filters, num_filters, 3, stride=stride, act="relu")
        self.conv2 = ConvBNLayer(num_filters, num_filters * 4, 1)
        if not shortcut:
            self.short = ConvBNLayer(num_channels, num_filters * 4, 1, stride=stride, is_vd_mode=not if_first)
        self.relu = nn.ReLU()
        self.shortcut = shortcut

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        short = x if self.shortcut else self.short(x)
        return self.relu(paddle.add(self.conv2(self.conv1(self.conv0(x))), short))


class ResNetVd(nn.Layer):
    """ResNet-vd with bottleneck blocks; parameter names match PaddleClas checkpoints."""

    def __init__(self, block_depth: list[int] = BLOCK_DEPTH, class_num: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNLayer(3, 32, 3, stride=2, act="relu"),
            ConvBNLayer(32, 32, 3, stride=1, act="relu"),
            ConvBNLayer(32, 64, 3, stride=1, act="relu"),
        )
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        blocks = []
        for stage, depth in enumerate(block_depth):
            for i in range(depth):
                blocks.append(
                    BottleneckBlock(
                        STAGE_IN_CHANNELS[stage] if i == 0 else NUM_FILTERS[stage] * 4,
                        NUM_FILTERS[stage],
                        stride=2 if i == 0 and stage != 0 else 1,
                        shortcut=i != 0,
                        if_first=stage == i == 0,
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        fc_in = STAGE_IN_CHANNELS[-1] * 2
        stdv = 1.0 / math.sqrt(fc_in)
        self.fc = nn.Linear(fc_in, class_num, weight_attr=ParamAttr(initializer=Uniform(-stdv, stdv)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.max_pool(self.stem(x))
        return self.fc(self.flatten(self.avg_pool(self.blocks(x))))


def ResNet50_vd(class_num: int = 1000) -> ResNetVd:
    """PaddleClas's `ResNet50_vd`: vd stem, avg-pool shortcut downsampling, [3, 4, 6, 3] bottlenecks."""
    return ResNetVd(BLOCK_DEPTH, class_num=class_num)
