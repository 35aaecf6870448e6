"""Parsing id lists such as ``1,3,5``, ``1-4,7`` or ``range(1,9,2)`` (no eval)."""

import re

from .errors import ConfigurationError

_RANGE = re.compile(r"^range\(\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?(?:,\s*(-?\d+)\s*)?\)$")
_SPAN = re.compile(r"^(\d+)\s*-\s*(\d+)$")
MAX_IDS = 100000


def parse_id_list(text):
    """Return the ids as a list of ints, in the order given, without duplicates.

    Accepted forms: ``1,3,5``; spans ``1-4,7``; ``[1, 2, 3]``; Python's
    ``range(stop)``, ``range(start, stop)`` and ``range(start, stop, step)``.
    """
    spec = text.strip()
    hint = "use e.g. '1,3,5', '1-4,7' or 'range(1,5)'"
    if not spec:
        raise ConfigurationError(f"empty id list; {hint}")
    match = _RANGE.match(spec)
    if match:
        numbers = [int(g) for g in match.groups() if g is not None]
        if len(numbers) == 1:
            numbers = [0, numbers[0]]
        if len(numbers) == 3 and numbers[2] == 0:
            raise ConfigurationError(f"id list '{text}': range step must not be 0")
        ids = list(range(*numbers))
    else:
        if spec.startswith("[") and spec.endswith("]"):
            spec = spec[1:-1]
        ids = []
        for part in spec.split(","):
            part = part.strip()
            span = _SPAN.match(part)
            if span:
                first, last = int(span.group(1)), int(span.group(2))
                if last < first:
                    raise ConfigurationError(f"id list '{text}': span '{part}' runs backwards")
                if last - first >= MAX_IDS:
                    raise ConfigurationError(f"id list '{text}': span '{part}' is too long")
                ids.extend(range(first, last + 1))
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise ConfigurationError(f"id list '{text}': '{part}' is not an id or a span; {hint}")
    if not ids:
        raise ConfigurationError(f"id list '{text}' holds no ids; {hint}")
    if any(i < 0 for i in ids):
        raise ConfigurationError(f"id list '{text}': ids must be >= 0")
    if len(ids) > MAX_IDS:
        raise ConfigurationError(f"id list '{text}' holds more than {MAX_IDS} ids")
    seen = set()
    duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
    if duplicates:
        raise ConfigurationError(f"id list '{text}' repeats id(s) {duplicates[:5]}")
    return ids
