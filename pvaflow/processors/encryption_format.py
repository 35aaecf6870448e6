"""The wire format and the keys of encrypted frames (see :mod:`pvaflow.processors.encryption`).

An encrypted frame is a small structure (:data:`ENCRYPTED_TYPE`): a clear
header packed by :data:`HEADER` (magic, version, flags, sender session,
sequence, nonce, uniqueId, time stamp, user tag), the AES key wrapped with
RSA-OAEP, the GCM tag, the ciphertext and an optional RSA-PSS signature over
all of these (:func:`signed_digest`). Keys are PEM files of RSA keys of at
least 2048 bits (:func:`load_key`).
"""

import os
import struct

import pvaccess as pva

from pvaflow.hpc.errors import ConfigurationError

ENCRYPTED_TYPE = {
    "uniqueId": pva.INT, "timeStamp": pva.PvTimeStamp(), "header": [pva.UBYTE],
    "wrappedKey": [pva.UBYTE], "tag": [pva.UBYTE], "ciphertext": [pva.UBYTE],
    "signature": [pva.UBYTE],
}
MAGIC, VERSION, SIGNED = b"PVFE", 1, 1
# magic, version, flags, session, sequence, nonce, uniqueId, seconds, nanoseconds, userTag
HEADER = struct.Struct("!4sBB8sQ12siqii")
TAG_BYTES = 16


class Rejected(Exception):
    """An encrypted object that fails a check; ``reason`` names the counter."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def require_crypto():
    try:
        from Crypto.PublicKey import RSA  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError("encryption needs pycryptodome: pip install pycryptodome") from None
    return RSA


def load_key(path, private, passphrase_env=None):
    """Read an RSA key (PEM) of at least 2048 bits; ConfigurationError when unusable."""
    RSA = require_crypto()
    passphrase = os.environ.get(passphrase_env) if passphrase_env else None
    try:
        with open(path, "rb") as handle:
            key = RSA.import_key(handle.read(), passphrase)
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise ConfigurationError(f"cannot read RSA key {path}: {exc}") from None
    if private and not key.has_private():
        raise ConfigurationError(f"{path} holds a public key; a private key is needed here")
    if key.size_in_bits() < 2048:
        raise ConfigurationError(f"{path}: RSA keys of {key.size_in_bits()} bits are too weak;"
                                 " use 2048 bits or more")
    return key


def signed_digest(sha256, header, wrapped, tag, ciphertext):
    """The SHA-256 hash object the RSA-PSS signature covers."""
    digest = sha256.new(bytes(header))
    digest.update(memoryview(wrapped))
    digest.update(bytes(tag))
    digest.update(ciphertext)
    return digest
