"""Training feeder: a PyTorch ``IterableDataset`` of batches read from a PVA channel.

A training job can learn from a live stream (the simulator with
``--lartpc events+truth``, a detector with a labelling stage) or a replayed
one (the simulator streaming an HDF5 file written by the workflow)::

    from torch.utils.data import DataLoader
    from pvaflow.processors.ssnet.feeder import StreamFeeder

    feeder = StreamFeeder("pvapy:image", batch_size=16, require_labels=True, max_batches=500)
    for images, labels, ids in DataLoader(feeder, batch_size=None):
        ...   # images float32 [16, 3, H, W], labels int64 [16, 3, H, W]

Frames are one event ``[planes, H, W]`` or one plane ``[H, W]`` with the
``Plane`` and ``Event`` attributes (assembled into events when
``planes`` > 1, by ``Event``). Labels are read when the frame's
``Sections`` attribute has a ``labels`` section (see
:mod:`pvaflow.sim.lartpc`); batches then carry them, else ``labels`` is None.

The monitor callback copies each frame (the received object is reused by
pvaccess) into a bounded queue; when training is slower than the stream the
newest frames are dropped and counted (:attr:`n_dropped`). Iteration ends
after ``max_batches`` batches, or when no frame came for ``idle_timeout``
seconds (a final, smaller batch is yielded unless ``drop_last``). Each
``iter()`` opens its own monitor. In a ``DataLoader`` with several
workers, give ``distributor_group`` so that the server's distributor plugin
deals each frame to one worker (otherwise every worker would see every
frame, which is refused).
"""

import logging
import queue
import threading

import numpy as np
import pvaccess as pva
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pvaflow.hpc import codecs, ntndarray
from pvaflow.sim.lartpc import (EVENT_ATTRIBUTE, PLANE_ATTRIBUTE, SECTIONS_ATTRIBUTE,
                                split_sections)

from .model import normalise

log = logging.getLogger(__name__)


class StreamFeeder(IterableDataset):
    """Batches ``(images, labels or None, uniqueIds)`` from ``channel`` (see the module docstring).

    ``normalisation``: None (raw ADC), or a dict ``{"mean", "std", "clip"}``
    as in a weights file's metadata. ``as_tensors=False`` yields numpy
    arrays (labels uint8). ``skip_initial`` ignores updates with
    ``uniqueId`` 0 (a record's initial value).
    """

    def __init__(self, channel, batch_size=8, *, planes=3, require_labels=False, max_batches=None,
                 idle_timeout=5.0, connect_timeout=30.0, queue_size=256, normalisation=None,
                 as_tensors=True, drop_last=False, skip_initial=True, provider="pva",
                 distributor_group=None):
        super().__init__()
        if batch_size < 1 or queue_size < 1:
            raise ValueError("batch_size and queue_size must be >= 1")
        self.channel, self.batch_size, self.planes = channel, int(batch_size), int(planes)
        self.require_labels, self.max_batches = require_labels, max_batches
        self.idle_timeout, self.connect_timeout = float(idle_timeout), float(connect_timeout)
        self.queue_size, self.normalisation = int(queue_size), normalisation
        self.as_tensors, self.drop_last, self.skip_initial = as_tensors, drop_last, skip_initial
        self.provider = pva.CA if provider == "ca" else pva.PVA
        self.distributor_group = distributor_group
        self.n_received = self.n_dropped = self.n_unlabelled = self.n_incomplete = 0

    # ------------------------------------------------------------- receiving
    def _request(self):
        if self.distributor_group is None:
            return "field()"
        return f"field(_[pydistributor=group:{self.distributor_group};trigger:uniqueId;updates:1])"

    def _decode(self, pv, decoder):
        """(uniqueId, image copy, labels copy or None, plane or None, event or None)."""
        pixels = decoder.pixels(pv)
        sections, plane, event = None, None, None
        for attribute in pv["attribute"]:
            name = attribute["name"]
            if name == SECTIONS_ATTRIBUTE:
                sections = ntndarray.attribute_value(attribute)
            elif name == PLANE_ATTRIBUTE:
                plane = ntndarray.attribute_value(attribute)
            elif name == EVENT_ATTRIBUTE:
                event = ntndarray.attribute_value(attribute)
        parts = split_sections(pixels, sections)
        image = np.array(parts["image"], np.float32)
        labels = parts.get("labels")
        if labels is not None:
            labels = np.rint(labels).astype(np.uint8)
        return pv.getInt("uniqueId"), image, labels, plane, event

    def _callback(self, frames, decoder, stop):
        def receive(pv):
            if stop.is_set():
                return
            try:
                item = self._decode(pv, decoder)
            except Exception:  # a frame we cannot read: skip it, keep the stream
                log.debug("feeder could not read a frame", exc_info=True)
                return
            if self.skip_initial and item[0] == 0:
                return
            self.n_received += 1
            try:
                frames.put_nowait(item)
            except queue.Full:
                self.n_dropped += 1
        return receive

    # ------------------------------------------------------------- iterating
    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.num_workers > 1 and self.distributor_group is None:
            raise ValueError("StreamFeeder in a DataLoader with several workers needs"
                             " distributor_group, else every worker gets every frame")
        frames = queue.Queue(self.queue_size)
        stop = threading.Event()
        channel = pva.Channel(self.channel, self.provider)
        channel.monitor(self._callback(frames, codecs.Decoder(), stop), self._request())
        try:
            yield from self._batches(frames)
        finally:
            stop.set()
            try:
                channel.stopMonitor()
            except pva.PvaException:
                pass

    def _events(self, frames):
        """Yield (uniqueId, image [P, H, W], labels or None) until the stream goes idle."""
        pending = {}
        timeout = self.connect_timeout
        while True:
            try:
                uid, image, labels, plane, event = frames.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = self.idle_timeout
            if self.require_labels and labels is None:
                self.n_unlabelled += 1
                continue
            if image.ndim == 3 or self.planes == 1:
                yield uid, image.reshape((-1,) + image.shape[-2:]), \
                    None if labels is None else labels.reshape((-1,) + labels.shape[-2:])
                continue
            key = event if event is not None else uid // self.planes
            parts = pending.setdefault(key, {})
            parts[int(plane or 0)] = (uid, image, labels)
            if len(parts) == self.planes:
                del pending[key]
                ordered = [parts[p] for p in sorted(parts)]
                truth = [p[2] for p in ordered]
                truth = None if any(t is None for t in truth) else np.stack(truth)
                yield ordered[0][0], np.stack([p[1] for p in ordered]), truth
            while len(pending) > 64:  # planes that never completed an event
                pending.pop(next(iter(pending)))
                self.n_incomplete += 1

    def _batches(self, frames):
        images, labels, ids, made = [], [], [], 0
        for uid, image, label in self._events(frames):
            if images and image.shape != images[0].shape:
                yield self._collate(images, labels, ids)
                made += 1
                images, labels, ids = [], [], []
            images.append(image)
            labels.append(label)
            ids.append(uid)
            if len(images) == self.batch_size:
                yield self._collate(images, labels, ids)
                made += 1
                images, labels, ids = [], [], []
            if self.max_batches is not None and made >= self.max_batches:
                return
        if images and not self.drop_last:
            yield self._collate(images, labels, ids)

    def _collate(self, images, labels, ids):
        x = np.stack(images)
        y = None if any(label is None for label in labels) else np.stack(labels)
        uid = np.asarray(ids, np.int64)
        if not self.as_tensors:
            if self.normalisation is not None:
                x = normalise(torch.from_numpy(x), {"normalisation": self.normalisation}).numpy()
            return x, y, uid
        x = torch.from_numpy(x)
        if self.normalisation is not None:
            normalise(x, {"normalisation": self.normalisation})
        return x, None if y is None else torch.from_numpy(y).long(), torch.from_numpy(uid)
