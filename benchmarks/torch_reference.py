"""The plain-PyTorch reference for benchmark figure 1: the bundled network's training step, without Keras.

Run by benchmarks.run in a subprocess (PyTorch and TensorFlow never share a process: each brings its own
thread pools) with `.bench-torch/` (make bench-torch) on its path:

    python -m benchmarks.torch_reference '{"blocks": [[2, 32], ...], "channels": 1, "size": 44, ...}'

The network is emotune.model's VGG layout, built from the same numbers: 3x3 convolutions without bias, each
followed by batch normalisation and ReLU, 2x2 max-pooling after every block, global average pooling, a
dense ReLU layer, dropout and the 7-way output; SGD with Nesterov momentum on soft targets; `channels_last`
memory and, where the Keras run trains in bfloat16, `torch.autocast` to bfloat16. No augmentation: this is the
network's step, to compare with the Keras row measured without augmentation. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def build(spec: dict[str, Any]) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    channels = int(spec["channels"])
    for convs, filters in spec["blocks"]:
        for _ in range(int(convs)):
            layers += [
                nn.Conv2d(channels, int(filters), 3, padding=1, bias=False),
                nn.BatchNorm2d(int(filters)),
                nn.ReLU(inplace=True),
            ]
            channels = int(filters)
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, int(spec["dense_units"])),
        nn.ReLU(inplace=True),
        nn.Dropout(float(spec["dropout"])),
        nn.Linear(int(spec["dense_units"]), int(spec["classes"])),
    )


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = build(spec).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    batch, size = int(spec["batch"]), int(spec["size"])
    x = torch.rand(batch, int(spec["channels"]), size, size).contiguous(memory_format=torch.channels_last)
    targets = torch.softmax(torch.randn(batch, int(spec["classes"])), dim=1)
    bfloat16 = spec["precision"] == "mixed_bfloat16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), targets)
        loss.backward()
        optimizer.step()

    for _ in range(int(spec["warmup_steps"])):
        step()
    runs = []
    for _ in range(int(spec["repeats"])):
        start = time.perf_counter()
        for _ in range(int(spec["steps_per_run"])):
            step()
        runs.append(batch * int(spec["steps_per_run"]) / (time.perf_counter() - start))
    return {
        "runs": runs,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
