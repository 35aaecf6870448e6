"""The model on its device: host -> device copy, autocast forward, labels (and scores) back.

On a GPU, batches are filled in pinned host memory, copied with
``non_blocking=True`` and timed with CUDA events (host-to-device copy,
compute, device-to-host copy); the forward pass runs under
``torch.inference_mode()`` and, for ``fp16``/``bf16``, ``torch.autocast``.
Every buffer (device input, host outputs) is allocated once per batch shape
and reused.
"""

import time

import numpy as np
import torch

from .model import normalise

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name=None):
    """``cuda``, ``cuda:N`` or ``cpu``; None/'auto' means cuda when available."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' asked for but CUDA is not available"
                         " (CUDA_VISIBLE_DEVICES, driver?); use \"device\": \"cpu\"")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"device must be cuda, cuda:N or cpu, got '{name}'")
    return device


class Engine:
    """Runs ``model`` (eval mode) on batches from :class:`~.batching.HostBatch` buffers."""

    def __init__(self, model, meta, device=None, precision="auto", compile_model=False,
                 want_scores=False):
        self.device = resolve_device(device)
        self.cuda = self.device.type == "cuda"
        if precision in (None, "", "auto"):
            precision = "fp16" if self.cuda else "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
        self.precision = precision
        self.meta = meta or {}
        self.num_classes = model.num_classes
        self.planes = model.planes
        self.shared = model.shared
        model = model.eval().to(self.device)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = torch.compile(model) if compile_model else model
        self.want_scores = want_scores
        self._work = None
        self._outputs = {}

    # -------------------------------------------------------------- buffers
    def allocate(self, shape):
        """A host batch buffer of ``shape`` [rows, slots, H, W] (pinned on a GPU)."""
        from .batching import HostBatch  # pylint: disable=import-outside-toplevel
        images = torch.empty(shape, dtype=torch.float32, pin_memory=self.cuda)
        return HostBatch(images, images.numpy())

    def _host_outputs(self, shape):
        """Reused host tensors for labels [rows, slots, H, W] and scores."""
        outputs = self._outputs.get(shape)
        if outputs is None:
            labels = torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda)
            scores = None
            if self.want_scores:
                rows, slots, height, width = shape
                scores = torch.empty((rows, slots, self.num_classes, height, width),
                                     dtype=torch.float16, pin_memory=self.cuda)
            outputs = self._outputs[shape] = (labels, scores)
        return outputs

    def _device_input(self, shape):
        work = self._work
        if work is None or tuple(work.shape) != shape:
            work = self._work = torch.empty(shape, dtype=torch.float32, device=self.device)
        return work

    # ------------------------------------------------------------- inference
    def run(self, batch):
        """Infer ``batch`` (a HostBatch); return (labels, scores, timings).

        ``labels`` is numpy uint8 [rows, slots, H, W], ``scores`` numpy float16
        [rows, slots, classes, H, W] or None; both stay valid until the next
        call. ``timings`` is (h2d_s, compute_s, d2h_s).
        """
        rows = batch.rows
        host = batch.images[:rows]
        full = tuple(batch.images.shape)
        labels_host, scores_host = self._host_outputs(full)
        labels_host, scores_host = labels_host[:rows], (None if scores_host is None
                                                        else scores_host[:rows])
        work = self._device_input(full)[:rows]  # a partial batch uses the first rows
        with torch.inference_mode():
            if self.cuda:
                return self._run_cuda(host, work, labels_host, scores_host)
            return self._run_cpu(host, work, labels_host, scores_host)

    def _forward(self, work):
        normalise(work, self.meta)
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            scores = self.model(work)
        else:
            with torch.autocast(self.device.type, dtype=dtype):
                scores = self.model(work)
        labels = scores.argmax(2).to(torch.uint8)
        probabilities = torch.softmax(scores.float(), 2).half() if self.want_scores else None
        return labels, probabilities

    def _run_cpu(self, host, work, labels_host, scores_host):
        t0 = time.perf_counter()
        work.copy_(host)
        t1 = time.perf_counter()
        labels, scores = self._forward(work)
        t2 = time.perf_counter()
        labels_host.copy_(labels)
        if scores is not None:
            scores_host.copy_(scores)
        t3 = time.perf_counter()
        return (labels_host.numpy(), None if scores is None else scores_host.numpy(),
                (t1 - t0, t2 - t1, t3 - t2))

    def _run_cuda(self, host, work, labels_host, scores_host):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        events[0].record()
        work.copy_(host, non_blocking=True)
        events[1].record()
        labels, scores = self._forward(work)
        events[2].record()
        labels_host.copy_(labels, non_blocking=True)
        if scores is not None:
            scores_host.copy_(scores, non_blocking=True)
        events[3].record()
        events[3].synchronize()
        h2d, compute, d2h = (events[k].elapsed_time(events[k + 1]) / 1e3 for k in range(3))
        return (labels_host.numpy(), None if scores is None else scores_host.numpy(),
                (h2d, compute, d2h))

    def infer_numpy(self, images):
        """Convenience: labels of raw images ``[N, planes, H, W]`` (numpy) as uint8 numpy."""
        batch = self.allocate(images.shape)
        batch.array[:] = images
        batch.counts[:] = images.shape[0]
        labels, scores, _ = self.run(batch)
        return labels.copy(), None if scores is None else scores.copy()


def summarise_times(times):
    """Mean of (h2d, compute, d2h) tuples in milliseconds."""
    if not times:
        return 0.0, 0.0, 0.0
    means = np.asarray(times, np.float64).mean(0) * 1e3
    return tuple(float(v) for v in means)
