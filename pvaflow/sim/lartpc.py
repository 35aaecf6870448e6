"""Synthetic LArTPC events: three wire-plane images of a 3-D event, with truth labels.

A liquid-argon time projection chamber sees a charged particle as ionisation
charge drifting to wire planes. Each plane gives a 2-D image: rows are drift
time (the x coordinate of the deposit), columns are the wire number (a
projection of y and z along the plane's wire angle). This module draws
events that look enough like that to train and test semantic segmentation:

* **tracks** (label 1): straight or gently curved minimum-ionising lines;
  the charge of each step fluctuates with a Landau-like (Moyal) law and
  stopping tracks get a Bragg rise at their end;
* **showers** (label 2): electromagnetic cascades: electrons that scatter
  and radiate photons, photons that travel a gap and convert into pairs,
  down to a critical energy;
* **noise**: white Gaussian noise, a coherent offset per wire and a few dead
  wires; charge diffuses over neighbouring pixels.

A pixel is labelled track or shower when the charge that class put there
(before noise) is above a visibility threshold, by whichever class put
more; every other pixel is background (0).

Events are deterministic: event ``i`` of a generator with seed ``s`` is the
same whatever was generated before it. Nothing here needs torch.

Frame layout on the wire (the simulator's ``--lartpc`` modes, the SSNet
processor and the training feeder share it): a frame's rows may hold
several *sections* of equal height, named in order by the ``Sections``
attribute (e.g. ``image,labels``); the plane of a one-plane frame is in the
``Plane`` attribute. See :func:`split_sections`.
"""

import math

import numpy as np

from pvaflow.hpc.errors import ConfigurationError, FrameFormatError
from pvaflow.hpc.ntndarray import ColorMode
from pvaflow.sim.frames import FrameSource

#: Class names, by label value.
CLASSES = ("background", "track", "shower")
#: Wire angles of the three planes (U, V, Y/collection), degrees from vertical.
PLANE_ANGLES = (60.0, -60.0, 0.0)
PLANE_NAMES = ("U", "V", "Y")
#: Attribute naming the row sections of a frame, and the plane of a one-plane frame.
SECTIONS_ATTRIBUTE = "Sections"
PLANE_ATTRIBUTE = "Plane"
EVENT_ATTRIBUTE = "Event"
#: Simulator modes (``--lartpc``).
MODES = ("events", "events+truth", "planes", "planes+truth")


def split_sections(array, sections):
    """Split ``array`` (``[..., k*H, W]``) into its ``k`` named row sections.

    ``sections`` is the ``Sections`` attribute (comma-separated names) or a
    list of names; an empty value means one section, ``image``. Returns a
    dict name -> view (no copy). Raises FrameFormatError when the rows do
    not divide evenly.
    """
    names = sections.split(",") if isinstance(sections, str) else list(sections or ())
    names = [n.strip() for n in names if n.strip()] or ["image"]
    rows = array.shape[-2]
    if rows % len(names):
        raise FrameFormatError(f"{rows} rows cannot hold the {len(names)} equal sections"
                               f" {','.join(names)}")
    height = rows // len(names)
    return {name: array[..., k * height:(k + 1) * height, :] for k, name in enumerate(names)}


class LArTPCEvent:
    """One event: ``image`` float32 ``[planes, H, W]`` (ADC) and ``label`` uint8."""

    __slots__ = ("index", "image", "label")

    def __init__(self, index, image, label):
        self.index = index
        self.image = image
        self.label = label


def _smooth(maps, weights):
    """Separable 3-tap blur over the last two axes (charge diffusion)."""
    side, centre = weights
    out = maps * centre
    out[..., 1:, :] += maps[..., :-1, :] * side
    out[..., :-1, :] += maps[..., 1:, :] * side
    tmp = out * centre
    tmp[..., :, 1:] += out[..., :, :-1] * side
    tmp[..., :, :-1] += out[..., :, 1:] * side
    return tmp


class LArTPCGenerator:
    """Deterministic generator of synthetic LArTPC events.

    ``height`` x ``width`` pixels per plane (time ticks x wires), ``planes``
    wire planes (1 to 3, angles from :data:`PLANE_ANGLES`), ``seed`` for
    reproducibility. Charge is in ADC counts: a minimum-ionising track gives
    about ``mip`` per pixel of length before diffusion; ``noise`` is the
    Gaussian noise sigma; ``threshold`` the charge above which a pixel is
    labelled.
    """

    def __init__(self, height=128, width=128, planes=3, seed=0, mip=20.0, noise=1.5,
                 threshold=5.0, dead_wire_fraction=0.01):
        if not 1 <= planes <= len(PLANE_ANGLES):
            raise ConfigurationError(f"planes must be 1 to {len(PLANE_ANGLES)}, got {planes}")
        if height < 8 or width < 8:
            raise ConfigurationError(f"plane size {height}x{width} is too small (8x8 at least)")
        self.height, self.width, self.planes = int(height), int(width), int(planes)
        self.seed = int(seed)
        self.mip, self.noise, self.threshold = float(mip), float(noise), float(threshold)
        self.dead_wire_fraction = float(dead_wire_fraction)
        self.scale = float(max(height, width))  # pixels per unit length of the detector box
        angles = np.radians(PLANE_ANGLES[:planes])
        # wire coordinate w = a*y + b*z + c, mapped to [0, 1)
        span = np.abs(np.cos(angles)) + np.abs(np.sin(angles))
        self._wire_y = np.sin(angles) / span
        self._wire_z = np.cos(angles) / span
        self._wire_c = np.where(np.sin(angles) < 0, -np.sin(angles) / span, 0.0)
        sigma = 0.6
        side = math.exp(-1.0 / (2 * sigma * sigma))
        self._blur = (side / (1 + 2 * side), 1 / (1 + 2 * side))

    # ------------------------------------------------------------------ public
    def event(self, index):
        """Return event ``index`` (a :class:`LArTPCEvent`)."""
        rng = np.random.default_rng([self.seed, int(index)])
        shape = (self.planes, self.height, self.width)
        charge = np.zeros((2,) + shape, np.float64)  # [track, shower]
        for points, dq, cls in self._particles(rng):
            self._deposit(charge[cls], points, dq)
        charge = _smooth(charge, self._blur)
        total = charge[0] + charge[1]
        label = np.where(charge[1] > charge[0], 2, 1).astype(np.uint8)
        label[total < self.threshold] = 0
        image = total + rng.normal(0.0, self.noise, shape)
        image += rng.normal(0.0, 0.3 * self.noise, (self.planes, 1, self.width))
        dead = rng.random((self.planes, self.width)) < self.dead_wire_fraction
        planes, wires = np.nonzero(dead)
        image[planes, :, wires] = 0.0
        label[planes, :, wires] = 0
        return LArTPCEvent(int(index), image.astype(np.float32), label)

    def events(self, count, start=0):
        """Yield ``count`` events from index ``start``."""
        for index in range(start, start + count):
            yield self.event(index)

    def batch(self, count, start=0):
        """Return ``(images, labels)`` arrays ``[count, planes, H, W]``."""
        images = np.empty((count, self.planes, self.height, self.width), np.float32)
        labels = np.empty(images.shape, np.uint8)
        for k, event in enumerate(self.events(count, start)):
            images[k], labels[k] = event.image, event.label
        return images, labels

    # ---------------------------------------------------------------- physics
    def _particles(self, rng):
        """Yield (points [n, 3] in the unit box, charge per point, class index 0/1)."""
        vertex = rng.uniform(0.2, 0.8, 3)
        for _ in range(rng.integers(1, 4)):  # tracks from the vertex
            yield self._track(rng, vertex, rng.uniform(0.15, 0.7), stopping=rng.random() < 0.4)
        for _ in range(rng.integers(0, 3)):  # cosmic-like tracks anywhere
            yield self._track(rng, rng.uniform(0.05, 0.95, 3), rng.uniform(0.3, 1.0),
                              stopping=False)
        n_showers = rng.integers(0, 3) + (rng.random() < 0.6)
        for k in range(n_showers):
            start = vertex if k == 0 and rng.random() < 0.5 else rng.uniform(0.1, 0.9, 3)
            if k > 0 or rng.random() < 0.5:  # photon-induced: a gap before the first charge
                start = np.clip(start + _unit(rng) * rng.uniform(0.02, 0.15), 0.0, 1.0)
            for points, dq in self._shower(rng, start, _unit(rng), rng.uniform(1.0, 4.0)):
                yield points, dq, 1

    def _path(self, rng, start, direction, length, curvature, scatter):
        """Points along a curved path: ``curvature`` rad per unit length plus a random walk."""
        step = 0.4 / self.scale
        n = max(int(length / step), 2)
        normal = _perpendicular(rng, direction)
        theta = curvature * step * np.arange(n)
        theta += np.cumsum(rng.normal(0.0, scatter * math.sqrt(step), n))
        steps = (np.cos(theta)[:, None] * direction + np.sin(theta)[:, None] * normal) * step
        return start + np.cumsum(steps, axis=0), step

    def _moyal(self, rng, n):
        """Landau-like fluctuation factors (mean about 1)."""
        z = rng.standard_normal(n)
        x = -np.log(np.maximum(z * z, 1e-12))  # Moyal distributed
        return np.clip(1.0 + 0.12 * (x - 1.27), 0.3, 4.0)

    def _track(self, rng, start, length, stopping):
        curvature = rng.uniform(0.0, 1.2) if rng.random() < 0.5 else 0.0
        points, step = self._path(rng, start, _unit(rng), length, curvature * rng.choice((-1, 1)),
                                  0.05)
        dq = self.mip * step * self.scale * self._moyal(rng, len(points))
        if stopping:
            residual = (len(points) - np.arange(len(points))) * step * self.scale  # pixels
            dq *= 1.0 + 3.0 / (1.0 + residual / 2.0)
        return _inside(points, dq) + (0,)

    def _shower(self, rng, start, direction, energy):
        """A cascade of ``energy`` (in units of detector length of MIP charge)."""
        radiation, conversion, critical = 0.06, 0.08, 0.04
        stack = [(start, direction, energy, False)]
        while stack:
            position, direction, e, photon = stack.pop()
            if photon:
                position = position + direction * rng.exponential(conversion)
                share = rng.uniform(0.2, 0.8)
                for part in (share, 1.0 - share):
                    stack.append((position, _tilt(rng, direction, 0.15), e * part, False))
                continue
            while e > 0.0:
                if e < critical:  # a last, wiggly low-energy stretch
                    points, step = self._path(rng, position, direction, e, 0.0, 6.0)
                    yield _inside(points, self._dq(rng, points, step, 1.0))
                    break
                length = min(rng.exponential(radiation), e)
                points, step = self._path(rng, position, direction, length, 0.0,
                                          1.0 + 0.3 / max(e, 0.05))
                yield _inside(points, self._dq(rng, points, step, 1.0))
                position = points[-1]
                direction = _tilt(rng, direction, 0.1)
                e -= length
                if e > critical:
                    emitted = e * rng.uniform(0.2, 0.6)
                    e -= emitted
                    stack.append((position, _tilt(rng, direction, 0.1), emitted, True))
            if len(stack) > 200:
                break

    def _dq(self, rng, points, step, factor):
        return factor * self.mip * step * self.scale * self._moyal(rng, len(points))

    def _deposit(self, charge, points, dq):
        """Add charge of 3-D ``points`` into the plane images ``charge`` [planes, H, W]."""
        if not len(points):
            return
        rows = (points[:, 0] * self.height).astype(np.int64)
        size = self.height * self.width
        for plane in range(self.planes):
            wire = (self._wire_y[plane] * points[:, 1] + self._wire_z[plane] * points[:, 2]
                    + self._wire_c[plane])
            cols = (wire * self.width).astype(np.int64)
            ok = (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)
            flat = np.bincount(rows[ok] * self.width + cols[ok], dq[ok], minlength=size)
            charge[plane] += flat.reshape(self.height, self.width)


def _unit(rng):
    vector = rng.standard_normal(3)
    return vector / np.linalg.norm(vector)


def _perpendicular(rng, direction):
    vector = np.cross(direction, _unit(rng))
    return vector / max(np.linalg.norm(vector), 1e-12)


def _tilt(rng, direction, sigma):
    vector = direction + rng.normal(0.0, sigma, 3)
    return vector / max(np.linalg.norm(vector), 1e-12)


def _inside(points, dq):
    ok = np.all((points >= 0.0) & (points < 1.0), axis=1)
    return points[ok], dq[ok]


# ----------------------------------------------------------------- simulator
class LArTPCFrame(np.ndarray):
    """A numpy frame that carries the NTNDArray attributes it is published with."""

    frame_attributes = None


def _attributed(array, attributes):
    frame = array.view(LArTPCFrame)
    frame.frame_attributes = attributes
    return frame


class LArTPCFrames(FrameSource):
    """Frame source of the simulator (``--lartpc MODE``); see :data:`MODES`.

    ``events``: one frame per event, the planes stacked ``[3, H, W]`` (RGB3,
    the one 3-D NTNDArray layout with three planes); ``planes``: one ``[H, W]``
    frame per plane with its ``Plane`` attribute. ``+truth`` appends the
    labels as a second row section (``Sections`` = ``image,labels``), so a
    frame is ``[.., 2H, W]`` float32. ``count`` frames are produced.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, count, height=128, width=128, mode="events", seed=0):
        if mode not in MODES:
            raise ConfigurationError(
                f"unknown LArTPC mode '{mode}'; use one of: {', '.join(MODES)}")
        if count <= 0:
            raise ConfigurationError(f"number of LArTPC frames must be > 0, got {count}")
        self.count, self.mode = int(count), mode
        self.generator = LArTPCGenerator(height, width, planes=3, seed=seed)
        self.per_plane = mode.startswith("planes")
        self.truth = mode.endswith("+truth")
        rows = height * (2 if self.truth else 1)
        self.color_mode = ColorMode.MONO if self.per_plane else ColorMode.RGB3
        self.frame_shape = (rows, width) if self.per_plane else (3, rows, width)
        self.name = f"LArTPC {mode} (seed {seed})"

    def __len__(self):
        return self.count

    def __iter__(self):
        sections = "image,labels" if self.truth else "image"
        produced, index = 0, 0
        while produced < self.count:
            event = self.generator.event(index)
            data = event.image
            if self.truth:
                data = np.concatenate([data, event.label.astype(np.float32)], axis=1)
            if self.per_plane:
                for plane in range(data.shape[0]):
                    if produced == self.count:
                        return
                    yield _attributed(data[plane], {SECTIONS_ATTRIBUTE: sections,
                                                    PLANE_ATTRIBUTE: plane, EVENT_ATTRIBUTE: index})
                    produced += 1
            else:
                yield _attributed(data, {SECTIONS_ATTRIBUTE: sections, EVENT_ATTRIBUTE: index})
                produced += 1
            index += 1
