"""SSNet: semantic segmentation (background / track / shower) of LArTPC wire-plane images.

* :class:`SSNetProcessor` (``-pc pvaflow.processors.ssnet.SSNetProcessor``):
  batched U-ResNet inference in a consumer;
* :mod:`.model`: the U-ResNet, its builders and the shipped weights;
* :mod:`.feeder`: a PyTorch ``IterableDataset`` reading frames (and truth
  labels) from a PVA channel, for training on a live or replayed stream;
* :mod:`.devices`: one GPU per consumer process (``CUDA_VISIBLE_DEVICES``).

Needs PyTorch (``pip install 'pvaflow[ssnet]'``); importing this package
does not import torch, building a processor or a model does.
"""

from .processor import SSNetProcessor

__all__ = ["SSNetProcessor"]
