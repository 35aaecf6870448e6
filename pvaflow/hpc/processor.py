"""The processor contract: what a user writes to process frames.

The method and attribute names are those of pvapy's streaming framework, so
a processor written for it runs unchanged (see :mod:`pvaflow.hpc.loader`).

Life cycle, all called by the framework:

``__init__(configDict)`` -> attributes set (``processorId``, ``logger``,
``inputChannel``, ``outputChannel``, ``objectIdField``, ``pvaServer``,
``dataPublisher``, ``metadataQueueMap``) -> ``start()`` -> ``process(pvObject)``
once per frame -> ``stop()``. ``configure(configDict)``, ``resetStats()`` and
``getStats()`` may be called between frames (never concurrently with
``process``).
"""

import logging

import numpy as np

from . import ntndarray


class UserDataProcessor:
    """Base class of user processors.

    The default :meth:`process` publishes its input unchanged on the output
    channel (a pass-through stage).
    """

    def __init__(self, configDict=None):
        self.configDict = dict(configDict or {})
        self.logger = logging.getLogger(f"pvaflow.processor.{type(self).__name__}")
        self.processorId = self.configDict.get("processorId")
        self.dataPublisher = None
        self.pvaServer = None
        self.inputChannel = self.configDict.get("inputChannel")
        self.outputChannel = self.configDict.get("outputChannel")
        self.objectIdField = self.configDict.get("objectIdField", "uniqueId")
        self.metadataQueueMap = {}

    def start(self):
        """Called once before the first frame."""

    def configure(self, configDict):
        """Called with the user's dict when a ``configure`` command arrives."""

    def process(self, pvObject):
        """Called for every frame; publish results with :meth:`updateOutputChannel`."""
        self.updateOutputChannel(pvObject)
        return pvObject

    def stop(self):
        """Called once after the last frame (after the queue has been drained)."""

    def resetStats(self):
        """Called by the ``reset_stats`` command."""

    def getStats(self):
        """Return a dict of the processor's own statistics (see getStatsPvaTypes)."""
        return {}

    def getStatsPvaTypes(self):
        """Return {name: pvaccess type} for the entries of :meth:`getStats`."""
        return {}

    def getInputPvObjectType(self):
        """Structure of the input record, for input modes that host it."""
        return None

    def getOutputPvObjectType(self, pvObject):
        """Structure of the output record; called with the first input frame.

        Return None when the processor publishes nothing.
        """
        return pvObject

    def updateOutputChannel(self, pvObject):
        """Publish ``pvObject`` on the output channel (no-op without one)."""
        if self.dataPublisher is not None:
            self.dataPublisher.updateOutputChannel(pvObject)


class AdImageProcessor(UserDataProcessor):
    """A processor of area-detector frames as numpy images.

    Subclasses implement :meth:`process_image`; the default :meth:`process`
    hands it a read-only view of the pixels and publishes what it returns
    (a numpy array, published as an NTNDArray with the input's ``uniqueId``
    and timestamps; None publishes nothing).

    The pvapy helper names (``reshapeNtNdArray``, ``generateNtNdArray2D``,
    ``replaceNtNdArrayImage2D``, ``getNtNdArrayDataFieldKey``) are provided
    too, for processors written against that API.
    """

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self._output = None

    def process_image(self, image, pvObject):
        """Return the processed image (numpy) or None; ``image`` is read-only."""
        return image

    def process(self, pvObject):
        result = self.process_image(ntndarray.image_view(pvObject), pvObject)
        if result is None:
            return None
        output = self._output_frame(result, pvObject)
        self.updateOutputChannel(output)
        return output

    def _output_frame(self, image, pvObject):
        """Reuse one output NTNDArray; copy the pixels into it once."""
        output = self._output
        if output is None:
            output = self._output = ntndarray.new_ntndarray(image, color_mode=self._color_mode(image))
        else:
            ntndarray.set_image(output, image)
        output.setInt("uniqueId", pvObject.getInt("uniqueId"))
        for field in ("timeStamp", "dataTimeStamp"):
            output.setLong(f"{field}.secondsPastEpoch", pvObject.getLong(f"{field}.secondsPastEpoch"))
            output.setInt(f"{field}.nanoseconds", pvObject.getInt(f"{field}.nanoseconds"))
        return output

    @staticmethod
    def _color_mode(image):
        if image.ndim <= 2:
            return ntndarray.ColorMode.MONO
        if image.shape[-1] == 3:
            return ntndarray.ColorMode.RGB1
        if image.shape[0] == 3:
            return ntndarray.ColorMode.RGB3
        return ntndarray.ColorMode.RGB2

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8))

    def getInputPvObjectType(self):
        import pvaccess as pva
        return pva.NtNdArray()

    # pvapy-compatible helpers -------------------------------------------------
    @classmethod
    def reshapeNtNdArray(cls, ntNdArray):
        """Return (imageId, image, nx, ny, nz, colorMode, fieldKey) like pvapy."""
        image = ntndarray.image_view(ntNdArray)
        mode = ntndarray.color_mode_of(ntNdArray)
        sizes = [d["size"] for d in ntNdArray["dimension"]]
        if mode == ntndarray.ColorMode.RGB1:
            nz, nx, ny = sizes
        elif mode == ntndarray.ColorMode.RGB2:
            nx, nz, ny = sizes
        elif mode == ntndarray.ColorMode.RGB3:
            nx, ny, nz = sizes
        else:
            nx, ny, nz = sizes[0], sizes[1] if len(sizes) > 1 else 1, None
        field = ntNdArray.getSelectedUnionFieldName("value")
        return ntNdArray["uniqueId"], image, nx, ny, nz, mode, field

    @classmethod
    def getNtNdArrayDataFieldKey(cls, image):
        return ntndarray.value_field_for(image.dtype)

    @classmethod
    def generateNtNdArray2D(cls, imageId, image, nx=None, ny=None, dtype=None,
                            compressorName=None, extraFieldsPvObject=None):
        if compressorName:
            raise NotImplementedError("compressed output: use pvaflow.processors codecs")
        nt = ntndarray.new_ntndarray(np.asarray(image).reshape(ny or image.shape[0], nx or image.shape[-1])
                                     if image.ndim == 1 else image, unique_id=imageId)
        if extraFieldsPvObject is not None:
            nt.set(extraFieldsPvObject)
        return nt

    @classmethod
    def replaceNtNdArrayImage2D(cls, ntNdArray, imageId, image, extraFieldsPvObject=None):
        ntndarray.set_image(ntNdArray, image)
        ntNdArray.setInt("uniqueId", int(imageId))
        if extraFieldsPvObject is not None:
            ntNdArray.set(extraFieldsPvObject)
        return ntNdArray
