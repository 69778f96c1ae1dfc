"""The project's own small VGG-style CNN for the offline reference workload.

Nine conv layers in five stages, VGG naming (``conv1_1`` ... ``conv5_2``), strides 1/2/4/8/16 like VGG-16, so the
papers' layer choices exist (``conv4_1, conv4_2, conv5_1, conv5_2`` play the role of VGG-16's conv4_2 ... conv5_3).
It is trained with batch normalisation (fast, stable on a CPU) and *exported with BN folded into the convs*, so the
shipped network is a plain Conv-ReLU-MaxPool stack exactly like torchvision's VGG: pre-ReLU features are conv
outputs, and rescaling a layer's weights is exactly compensated by the next layer (the SID coherency property).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Channels per stage and convs per stage.
TOYNET_CHANNELS = (12, 24, 48, 96, 128)
TOYNET_DEPTHS = (1, 2, 2, 2, 2)
TOYNET_INPUT_SIZE = 128


class ToyVGG(nn.Module):
    """VGG-style network: ``features`` (Conv[-BN]-ReLU blocks with max pooling) and a global-average classifier."""

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = TOYNET_CHANNELS,
        depths: Sequence[int] = TOYNET_DEPTHS,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for stage, (c_out, depth) in enumerate(zip(channels, depths, strict=True)):
            if stage > 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(depth):
                layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU(inplace=True))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        self.channels = tuple(channels)
        self.depths = tuple(depths)
        self.batch_norm = batch_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


def fold_batch_norm(model: ToyVGG) -> ToyVGG:
    """Return a BN-free copy of ``model`` whose convs absorb the (eval-mode) batch-norm statistics."""
    if not model.batch_norm:
        return model
    plain = ToyVGG(model.classifier.out_features, model.channels, model.depths, batch_norm=False)
    src = list(model.features)
    dst_convs = [m for m in plain.features if isinstance(m, nn.Conv2d)]
    k = 0
    with torch.no_grad():
        for i, module in enumerate(src):
            if not isinstance(module, nn.Conv2d):
                continue
            bn = src[i + 1]
            assert isinstance(bn, nn.BatchNorm2d)
            assert bn.running_var is not None and bn.running_mean is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv = dst_convs[k]
            conv.weight.copy_(module.weight * scale[:, None, None, None])
            assert conv.bias is not None
            conv.bias.copy_(bn.bias - bn.running_mean * scale)
            k += 1
        plain.classifier.load_state_dict(model.classifier.state_dict())
    return plain.eval()
