"""U-ResNet for SSNet: per-pixel background / track / shower scores of wire-plane images.

The network is an encoder-decoder of residual blocks: ``depth`` levels,
each one residual block (or ``blocks``) of ``base_filters * 2**level``
filters (at most ``max_filters``), a strided convolution down, a transposed convolution up and a
skip connection (concatenation) from the encoder level of the same size.
It is fully convolutional: any image size works (inputs are padded to a
multiple of ``2**depth`` and the output cropped back).

Planes. The model takes ``[batch, planes, H, W]`` and returns
``[batch, planes, classes, H, W]``. With ``shared=True`` one network serves
every plane (the planes are folded into the batch). With ``shared=False``
each plane has its own network, as in the original SSNet; the networks are
stored side by side as the groups of grouped convolutions, so one forward
pass runs every plane's network at once instead of one network per call.

Model zoo, in the style of torchvision: builders are registered by name
(:func:`list_models`, :func:`get_model`), take keyword-only arguments and a
``weights`` argument; :class:`Weights` entries carry the state-dict file
(shipped in ``weights/``) and its metadata (classes, planes, input size,
normalisation, recipe, accuracy). Loading reads only local files with
``torch.load(..., weights_only=True)``: nothing is downloaded.
"""

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def _conv(cin, cout, groups, kernel=3, stride=1):
    return nn.Conv2d(cin * groups, cout * groups, kernel, stride, kernel // 2, groups=groups,
                     bias=False)


def _norm(channels, groups):
    return nn.BatchNorm2d(channels * groups)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU; ``groups`` networks."""

    def __init__(self, cin, cout, groups=1):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, groups), _norm(cout, groups)
        self.conv2, self.bn2 = _conv(cout, cout, groups), _norm(cout, groups)
        self.shortcut = None
        if cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, groups, kernel=1), _norm(cout, groups))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)), inplace=True)


def _stage(cin, cout, groups, blocks):
    layers = [ResidualBlock(cin, cout, groups)]
    layers += [ResidualBlock(cout, cout, groups) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _group_cat(a, b, groups):
    """Concatenate channels group by group (each plane's network sees its own features)."""
    if groups == 1:
        return torch.cat((a, b), 1)
    n, _, h, w = a.shape
    both = torch.cat((a.view(n, groups, -1, h, w), b.view(n, groups, -1, h, w)), 2)
    return both.view(n, -1, h, w)


class UResNet(nn.Module):
    """The SSNet U-ResNet (see the module docstring). Input ``[N, planes, H, W]``.

    A shared network (``shared=True``) accepts any number of planes.
    """

    def __init__(self, *, planes=3, shared=False, num_classes=3, base_filters=16, depth=4,
                 blocks=1, max_filters=None):
        super().__init__()
        if planes < 1 or num_classes < 2 or base_filters < 1 or depth < 1 or blocks < 1:
            raise ValueError("planes, base_filters, depth and blocks must be >= 1,"
                             " num_classes >= 2")
        self.planes, self.shared, self.num_classes = planes, shared, num_classes
        self.depth = depth
        g = self.groups = 1 if shared else planes
        widths = [min(base_filters * 2 ** level, max_filters or base_filters * 2 ** level)
                  for level in range(depth + 1)]
        self.stem = nn.Sequential(_conv(1, widths[0], g, kernel=5), _norm(widths[0], g),
                                  nn.ReLU(inplace=True))
        self.encoders = nn.ModuleList(_stage(widths[k], widths[k], g, blocks) for k in range(depth))
        self.downs = nn.ModuleList(
            nn.Sequential(_conv(widths[k], widths[k + 1], g, stride=2), _norm(widths[k + 1], g),
                          nn.ReLU(inplace=True)) for k in range(depth))
        self.bottom = _stage(widths[depth], widths[depth], g, blocks)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[k + 1] * g, widths[k] * g, 2, 2, groups=g, bias=False)
            for k in range(depth))
        self.decoders = nn.ModuleList(_stage(2 * widths[k], widths[k], g, blocks)
                                      for k in range(depth))
        self.head = nn.Conv2d(widths[0] * g, num_classes * g, 1, groups=g)

    def forward(self, x):
        """``x`` [N, planes, H, W] (normalised) -> class scores [N, planes, classes, H, W]."""
        n, planes, h, w = x.shape
        if planes != self.planes and not self.shared:
            raise ValueError(f"the model has {self.planes} planes, the input {planes}")
        if self.shared:
            x = x.reshape(n * planes, 1, h, w)
        multiple = 2 ** self.depth
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.stem(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.bottom(x)
        for k in reversed(range(self.depth)):
            x = self.decoders[k](_group_cat(skips[k], self.ups[k](x), self.groups))
        x = self.head(x)
        if pad_h or pad_w:
            x = x[..., :h, :w]
        return x.reshape(n, planes, self.num_classes, h, w)

    def config(self):
        """The builder keyword arguments that rebuild this architecture."""
        return dict(self._config)


# ------------------------------------------------------------------- registry
_BUILDERS = {}
_WEIGHTS = {}


def register_model(name):
    """Decorator registering a builder under ``name``."""
    def wrap(builder):
        _BUILDERS[name] = builder
        return builder
    return wrap


def list_models():
    """Names of the registered builders."""
    return sorted(_BUILDERS)


def get_model(name, **kwargs):
    """Build the registered model ``name`` (keyword arguments go to its builder)."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        known = ", ".join(list_models())
        raise ValueError(f"unknown SSNet model '{name}'; known: {known}") from None
    return builder(**kwargs)


def get_model_weights(name):
    """The weights enum of model ``name``."""
    return _WEIGHTS[name]


@dataclass(frozen=True)
class Weights:
    """A weights file and its metadata (``meta`` is the JSON sidecar's content)."""

    file: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def path(self):
        return self.file if os.path.isabs(self.file) else os.path.join(WEIGHTS_DIR, self.file)

    def get_state_dict(self, check_hash=True):
        """Read the state dict (tensors only: ``weights_only=True``) from the local file."""
        path = self.path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SSNet weights file {path} does not exist")
        expected = self.meta.get("sha256")
        if check_hash and expected:
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            if digest != expected:
                raise ValueError(f"SSNet weights file {path}: sha256 {digest} does not match"
                                 f" the metadata ({expected})")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {key: value.float() if value.is_floating_point() else value
                for key, value in state.items()}


def read_meta(path):
    """The JSON metadata of a weights file: ``<file>.json`` next to it, or {}."""
    meta_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(meta_path):
        return {}
    with open(meta_path) as handle:
        return json.load(handle)


def weights_from_file(path):
    """A :class:`Weights` for a user's file (metadata from its JSON sidecar if any)."""
    return Weights(os.path.abspath(path), read_meta(path))


def _shipped(file):
    path = os.path.join(WEIGHTS_DIR, file)
    return Weights(file, read_meta(path))


class UResNetSmall_Weights(enum.Enum):  # pylint: disable=invalid-name
    """Weights of :func:`uresnet_small` (see ``weights/*.json`` for the recipe and accuracy)."""

    LARTPC_SYNTH_V1 = _shipped("uresnet_small_lartpc_v1.pt")
    DEFAULT = LARTPC_SYNTH_V1

    @property
    def meta(self):
        return self.value.meta

    def get_state_dict(self, check_hash=True):
        return self.value.get_state_dict(check_hash)


def resolve_weights(weights):
    """Accept a Weights, a weights enum member, a name ('DEFAULT', 'LARTPC_SYNTH_V1') or a path."""
    if weights is None or isinstance(weights, Weights):
        return weights
    if isinstance(weights, enum.Enum):
        return weights.value
    if isinstance(weights, str):
        if weights in UResNetSmall_Weights.__members__:
            return UResNetSmall_Weights[weights].value
        return weights_from_file(weights)
    raise TypeError(f"weights must be a Weights, a name or a path, not {type(weights).__name__}")


def _build(weights, defaults, kwargs):
    weights = resolve_weights(weights)
    config = dict(defaults)
    if weights is not None:
        config.update(weights.meta.get("architecture", {}))
    config.update(kwargs)
    model = UResNet(**config)
    model._config = config  # pylint: disable=protected-access
    if weights is not None:
        model.load_state_dict(weights.get_state_dict())
        model.weights_meta = weights.meta
    else:
        model.weights_meta = {}
    return model


@register_model("uresnet")
def uresnet(*, weights=None, **kwargs):
    """A U-ResNet of any size: ``planes``, ``shared``, ``num_classes``, ``base_filters``,
    ``depth``, ``blocks``, ``max_filters`` (defaults 3, False, 3, 16, 4, 1, None)."""
    return _build(weights, {"planes": 3, "shared": False, "num_classes": 3, "base_filters": 16,
                            "depth": 4, "blocks": 1, "max_filters": None}, kwargs)


@register_model("uresnet_small")
def uresnet_small(*, weights=None, **kwargs):
    """The small shipped model: 8 base filters, depth 4, at most 32 filters, per-plane
    networks for 3 planes."""
    return _build(weights, {"planes": 3, "shared": False, "num_classes": 3, "base_filters": 8,
                            "depth": 4, "blocks": 1, "max_filters": 32}, kwargs)


_WEIGHTS["uresnet_small"] = UResNetSmall_Weights


def normalise(images, meta):
    """Scale raw ADC ``images`` (tensor) as the weights were trained: ``(x - mean) / std``,
    clipped to ``clip``; in place when possible."""
    norm = (meta or {}).get("normalisation", {"mean": 0.0, "std": 20.0, "clip": [-1.0, 10.0]})
    images.sub_(norm["mean"]).div_(norm["std"])
    low, high = norm.get("clip", (None, None))
    if low is not None or high is not None:
        images.clamp_(low, high)
    return images
