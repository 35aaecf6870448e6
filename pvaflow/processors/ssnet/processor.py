"""SSNet processor: background / track / shower label of every pixel of LArTPC wire planes.

Run it (``pip install 'pvaflow[ssnet]'``)::

    pvapy-hpc-consumer -ic pvapy:image -oc ssnet:*:labels -nc 2 -dg g -dt uniqueId -du 1 \\
        -pc pvaflow.processors.ssnet.SSNetProcessor \\
        -pa '{"batchSize": 8, "maxLatencyMs": 50, "output": "image,labels"}'

Input frames hold one event's planes stacked ``[planes, H, W]`` (an RGB3
NTNDArray for three planes) or one plane ``[H, W]`` with its index in the
``Plane`` attribute. A ``Sections`` attribute (see
:mod:`pvaflow.sim.lartpc`) marks frames that carry more than the image,
e.g. the simulator's truth labels; only the ``image`` section is read.
Compressed frames are decoded first.

Output, one NTNDArray per input frame (per event for stacked input), with
the input's ``uniqueId`` and both time stamps and the attributes
``Classes`` (``background,track,shower``), ``Model``, ``Sections`` and, for
one-plane frames, ``Plane``:

* ``"output": "labels"`` (default): the labels, uint8, same shape as the image;
* any other combination of ``image``, ``labels``, ``scores`` (e.g.
  ``"image,labels"``): the sections stacked along the rows in that order,
  float32 (``scores`` is one section per class: softmax probabilities
  computed in float16; pvData has no 16-bit float type, so they travel as
  float32 holding float16 values).

Arguments (``-pa`` JSON): ``weights`` (a ``.pt`` state-dict path with its
``.json`` metadata next to it, or a shipped name; default ``DEFAULT``),
``model`` (a registered builder, default ``uresnet_small``; the metadata's
architecture wins), ``device`` (``cuda``, ``cuda:N``, ``cpu``; default
cuda when available), ``precision`` (``auto``: fp16 on a GPU, fp32 on
CPU; ``fp32``, ``fp16``, ``bf16``), ``batchSize`` (8), ``maxLatencyMs``
(50: a batch that is not full goes this long after its first frame),
``buffers`` (3 host batch buffers), ``compile`` (false: ``torch.compile``),
``threads`` (CPU threads for torch; default: torch's), ``output``,
``planeAttribute`` (``Plane``). ``configure`` changes ``maxLatencyMs``.
"""

import threading
import time

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor, codecs, ntndarray
from pvaflow.hpc.errors import FrameFormatError
from pvaflow.sim.lartpc import CLASSES, PLANE_ATTRIBUTE, SECTIONS_ATTRIBUTE, split_sections

OUTPUT_PARTS = ("image", "labels", "scores")


def parse_output(value):
    """The output sections, in canonical order, from a list or comma-separated text."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    parts = [p.strip() for p in parts if p.strip()]
    unknown = [p for p in parts if p not in OUTPUT_PARTS]
    if unknown or not parts:
        raise ValueError(f"output must name some of {', '.join(OUTPUT_PARTS)}, got {value!r}")
    return [p for p in OUTPUT_PARTS if p in parts]


def section_names(parts, classes):
    """The ``Sections`` attribute of the output for ``parts``."""
    names = []
    for part in parts:
        names.extend(f"score_{c}" for c in classes) if part == "scores" else names.append(part)
    return ",".join(names)


class SSNetProcessor(UserDataProcessor):
    """Batched U-ResNet inference on wire-plane frames (see the module docstring)."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        import torch  # pylint: disable=import-outside-toplevel
        from . import engine as engine_module  # pylint: disable=import-outside-toplevel
        from . import model as zoo  # pylint: disable=import-outside-toplevel
        config = self.configDict
        if config.get("threads"):
            torch.set_num_threads(int(config["threads"]))
        self.parts = parse_output(config.get("output", "labels"))
        batch_size = int(config.get("batchSize", 8))
        latency = float(config.get("maxLatencyMs", 50.0)) / 1e3
        buffers = int(config.get("buffers", 3))
        if batch_size < 1 or latency < 0 or buffers < 2:
            raise ValueError("batchSize must be >= 1, maxLatencyMs >= 0 and buffers >= 2")
        weights = zoo.resolve_weights(config.get("weights", "DEFAULT"))
        network = zoo.get_model(config.get("model", "uresnet_small"), weights=weights)
        self.meta = network.weights_meta
        self.classes = tuple(self.meta.get("classes", CLASSES))
        self.model_name = self.meta.get("name", config.get("model", "uresnet_small"))
        self.engine = engine_module.Engine(network, self.meta, config.get("device"),
                                           config.get("precision", "auto"),
                                           bool(config.get("compile", False)),
                                           want_scores="scores" in self.parts)
        self.plane_attribute = config.get("planeAttribute", PLANE_ATTRIBUTE)
        self.slots = 1 if self.engine.shared else self.engine.planes
        from .batching import Batcher  # pylint: disable=import-outside-toplevel
        self.batcher = Batcher(batch_size, latency, buffers, self.engine.allocate)
        self.decoder = codecs.Decoder()
        self.sections = section_names(self.parts, self.classes)
        self._outputs = {}
        self._assembled = None
        self._stamps = np.zeros(4, np.int64)
        self._lock = threading.Lock()
        self._worker = None
        self.resetStats()

    # ------------------------------------------------------------- life cycle
    def start(self):
        """Start the inference thread."""
        self._worker = threading.Thread(target=self._work, name="ssnet-inference", daemon=True)
        self._worker.start()

    def stop(self):
        """Infer what is queued, publish it, end the inference thread."""
        self.batcher.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def configure(self, configDict):
        """Run-time settings: ``maxLatencyMs`` (others need a restart)."""
        if "maxLatencyMs" in configDict:
            latency = float(configDict["maxLatencyMs"])
            if latency < 0:
                raise ValueError(f"maxLatencyMs must be >= 0, got {latency}")
            self.batcher.set_max_latency(latency / 1e3)

    # ---------------------------------------------------------------- frames
    def process(self, pvObject):
        """Copy the frame's image into the current batch (inference runs on its own thread)."""
        if self._worker is None:
            self.start()
        if self.first_input is None:
            self.first_input = time.monotonic()
        image = self.decoder.pixels(pvObject)
        sections, plane = None, None
        for attribute in pvObject["attribute"]:
            name = attribute["name"]
            if name == SECTIONS_ATTRIBUTE:
                sections = ntndarray.attribute_value(attribute)
            elif name == self.plane_attribute:
                plane = ntndarray.attribute_value(attribute)
        if sections and sections != "image":
            image = split_sections(image, sections).get("image")
            if image is None:
                raise FrameFormatError(f"frame sections '{sections}' have no 'image'")
        stamps = self._stamps
        stamps[0] = pvObject.getLong("timeStamp.secondsPastEpoch")
        stamps[1] = pvObject.getInt("timeStamp.nanoseconds")
        stamps[2] = pvObject.getLong("dataTimeStamp.secondsPastEpoch")
        stamps[3] = pvObject.getInt("dataTimeStamp.nanoseconds")
        unique_id = pvObject.getInt("uniqueId")
        if image.ndim == 3:
            if not self.engine.shared and image.shape[0] != self.engine.planes:
                raise FrameFormatError(f"frame has {image.shape[0]} planes, the model"
                                       f" {self.engine.planes}")
            self.batcher.add(image, image.shape, None, unique_id, stamps)
        elif image.ndim == 2:
            plane = int(plane or 0)
            if not 0 <= plane < self.engine.planes:
                raise FrameFormatError(f"plane {plane} is outside the model's"
                                       f" {self.engine.planes} planes")
            slot = 0 if self.engine.shared else plane
            self.batcher.add(image, (self.slots,) + image.shape, slot, unique_id, stamps, plane)
        else:
            raise FrameFormatError(
                f"SSNet needs [planes, H, W] or [H, W] frames, got {image.shape}")
        return None

    # ----------------------------------------------------------- inference
    def _work(self):
        take, release = self.batcher.take, self.batcher.release
        while True:
            batch = take()
            if batch is None:
                return
            try:
                labels, scores, timings = self.engine.run(batch)
                self._publish(batch, labels, scores)
                with self._lock:
                    self.n_batches += 1
                    self.n_frames += batch.n_frames
                    self.n_events += batch.n_frames if batch.stacked else 0
                    self.n_plane_frames += 0 if batch.stacked else batch.n_frames
                    self.h2d_s += timings[0]
                    self.compute_s += timings[1]
                    self.d2h_s += timings[2]
                    self.last_output = time.monotonic()
            except Exception as exc:  # counted; the stream goes on
                with self._lock:
                    self.n_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                if self.n_errors == 1:
                    self.logger.error("SSNet batch failed (later errors are counted)",
                                      exc_info=True)
            finally:
                release(batch)

    def _publish(self, batch, labels, scores):
        publisher = self.dataPublisher
        if publisher is None or self.outputChannel is None:
            return
        if batch.stacked:
            for row in range(batch.rows):
                output = self._output_frame(None, batch.array[row], labels[row],
                                            None if scores is None else scores[row])
                self._finish(output, batch, row, 0)
                publisher.updateOutputChannel(output)
            return
        slots = batch.array.shape[1]
        for cell in batch.arrival[:batch.n_frames]:  # one-plane frames, in arrival order
            row, slot = divmod(int(cell), slots)
            output = self._output_frame(int(batch.planes[row, slot]), batch.array[row, slot],
                                        labels[row, slot],
                                        None if scores is None else scores[row, slot])
            self._finish(output, batch, row, slot)
            publisher.updateOutputChannel(output)

    def _output_frame(self, plane, image, labels, scores):
        """Fill the reused output NTNDArray of ``plane`` (None: stacked) with this event."""
        if self.parts == ["labels"]:
            data = labels
        else:
            sections = [image] if "image" in self.parts else []
            if "labels" in self.parts:
                sections.append(labels)
            if scores is not None:
                sections.extend(scores[..., k, :, :] for k in range(scores.shape[-3]))
            height = image.shape[-2]
            shape = image.shape[:-2] + (height * len(sections), image.shape[-1])
            data = self._assembled
            if data is None or data.shape != shape:
                data = self._assembled = np.empty(shape, np.float32)
            for k, section in enumerate(sections):
                data[..., k * height:(k + 1) * height, :] = section
        output = self._outputs.get(plane)
        mode = ntndarray.ColorMode.RGB3 if data.ndim == 3 else None
        if output is None:
            attributes = {"Classes": ",".join(self.classes), "Model": self.model_name,
                          SECTIONS_ATTRIBUTE: self.sections}
            if plane is not None:
                attributes[self.plane_attribute] = plane
            output = self._outputs[plane] = ntndarray.new_ntndarray(
                data, color_mode=mode, attributes=attributes)
        else:
            ntndarray.set_image(output, data)
        return output

    @staticmethod
    def _finish(output, batch, row, slot):
        output.setInt("uniqueId", int(batch.ids[row, slot]))
        s = batch.stamps[row, slot]
        output.setLong("timeStamp.secondsPastEpoch", int(s[0]))
        output.setInt("timeStamp.nanoseconds", int(s[1]))
        output.setLong("dataTimeStamp.secondsPastEpoch", int(s[2]))
        output.setInt("dataTimeStamp.nanoseconds", int(s[3]))

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else pva.NtNdArray()

    # ------------------------------------------------------------- statistics
    def resetStats(self):
        with getattr(self, "_lock", threading.Lock()):
            self.n_batches = self.n_frames = self.n_events = self.n_plane_frames = 0
            self.n_errors = 0
            self.last_error = ""
            self.h2d_s = self.compute_s = self.d2h_s = 0.0
            self.first_input = self.last_output = None

    def getStats(self):
        with self._lock:
            batches = self.n_batches
            elapsed = (self.last_output - self.first_input) if batches else 0.0
            per = (lambda seconds: seconds / batches * 1e3) if batches else (lambda seconds: 0.0)
            events = self.n_events + self.n_plane_frames / max(self.engine.planes, 1)
            return {
                "nEvents": self.n_events, "nPlaneFrames": self.n_plane_frames,
                "nBatches": batches,
                "eventsPerSecond": events / elapsed if elapsed > 0 else 0.0,
                "meanBatchSize": self.n_frames / batches if batches else 0.0,
                "computeMsPerBatch": per(self.compute_s), "h2dMsPerBatch": per(self.h2d_s),
                "d2hMsPerBatch": per(self.d2h_s), "nErrors": self.n_errors,
                "lastError": self.last_error, "device": str(self.engine.device),
                "precision": self.engine.precision,
            }

    def getStatsPvaTypes(self):
        return {
            "nEvents": pva.ULONG, "nPlaneFrames": pva.ULONG, "nBatches": pva.ULONG,
            "eventsPerSecond": pva.DOUBLE, "meanBatchSize": pva.DOUBLE,
            "computeMsPerBatch": pva.DOUBLE, "h2dMsPerBatch": pva.DOUBLE,
            "d2hMsPerBatch": pva.DOUBLE, "nErrors": pva.ULONG, "lastError": pva.STRING,
            "device": pva.STRING, "precision": pva.STRING,
        }
