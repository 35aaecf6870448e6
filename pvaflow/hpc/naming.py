"""Channel names: the ``*`` and ``_`` conventions and validation."""

import re

from .errors import ConfigurationError

# Characters EPICS record names may use, plus '.' for field access.
_VALID = re.compile(r"^[A-Za-z0-9_\-+:\[\]<>;.{}/#%=@^~!|&$]+$")


def format_id(value, id_format_spec=None):
    """Format a process id for channel names (``-ifs``, e.g. ``02d``)."""
    if not id_format_spec:
        return str(value)
    try:
        return format(value, id_format_spec)
    except ValueError as exc:
        raise ConfigurationError(
            f"id format spec '{id_format_spec}' cannot format id {value}: {exc}; use e.g. '02d'"
        ) from None


def resolve_channel(name, role, kind, process_id, id_format_spec=None, what="channel"):
    """Apply the naming rules and validate.

    ``_`` means ``pvapy:<kind>:<id>:<role>``; ``*`` is replaced by the id.
    Returns None when ``name`` is None; an empty or malformed name is an error.
    """
    if name is None:
        return None
    ident = format_id(process_id, id_format_spec)
    if name == "_":
        name = f"pvapy:{kind}:{ident}:{role}"
    name = name.replace("*", ident)
    validate_channel(name, what)
    return name


def validate_channel(name, what="channel"):
    if not name or not _VALID.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} name {name!r}: use letters, digits and _-+:[]<>;. (no spaces,"
            " quotes, commas or parentheses)")
    return name
