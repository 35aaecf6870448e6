"""Encrypt NTNDArray frames for the network and decrypt them on the other side.

:class:`Encryptor` publishes each frame as an encrypted object;
:class:`Decryptor` checks it and publishes the NTNDArray again::

    pvapy-hpc-consumer -ic pvapy:image -oc secret:image \\
        -pc pvaflow.processors.encryption.Encryptor \\
        -pa '{"publicKeyFile": "receiver_public.pem", "signingKeyFile": "sender_private.pem"}'
    pvapy-hpc-consumer -ic secret:image -oc clear:image \\
        -pc pvaflow.processors.encryption.Decryptor \\
        -pa '{"privateKeyFile": "receiver_private.pem", "verifyKeyFile": "sender_public.pem"}'

Scheme (pycryptodome): the frame is encrypted with AES-256-GCM under a
random key that is renewed every ``keyRotationFrames`` frames and/or every
``keyRotationPeriod`` seconds (``keyRotationFrames: 1``: a key per frame).
The key travels wrapped with RSA-OAEP (SHA-256) for the receiver's public
key. The clear header (format version, sender session, sequence number,
nonce, uniqueId, time stamp) is authenticated by GCM; with a signing key the
sender also signs header, wrapped key, tag and ciphertext with RSA-PSS
(SHA-256). The NTNDArray fields are written explicitly (typed binary
fields: no pickle).

The decryptor checks structure and sizes, the signature (when it has a
verify key it requires one), unwraps the key, checks the GCM tag, then that
the sequence number was not seen before (a window of ``replayWindow``
numbers per sender session) and, with ``maxAge`` > 0, that the time stamp is
recent. Only then does it read the plaintext and call :meth:`Decryptor.deliver`,
which publishes the frame; subclass and override it to process frames in
place. Rejected objects are counted by reason and never delivered.

Without signatures, anyone holding the receiver's public key can make
objects the decryptor accepts: give ``verifyKeyFile`` for authenticity.
"""

import os
import time
from collections import OrderedDict

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.processors.codec_processors import Throughput, int_arg, refuse_remote_paths
from pvaflow.processors.encryption_format import (ENCRYPTED_TYPE, HEADER, MAGIC, SIGNED,
                                                   TAG_BYTES, VERSION, Rejected, load_key,
                                                   require_crypto, signed_digest)
from pvaflow.processors.frame_bytes import MalformedFrame, restore_frame, serialize_frame

def _grow(buffer, size):
    return buffer if buffer.size >= size else np.empty(size, np.uint8)


class Encryptor(UserDataProcessor):
    """Publish every frame encrypted (see the module docstring).

    Args: ``publicKeyFile`` (receiver's RSA public key, required),
    ``signingKeyFile`` (own RSA private key: sign every object),
    ``signingKeyPassphraseEnv`` (environment variable holding its passphrase),
    ``keyRotationFrames`` (default 0: not by count), ``keyRotationPeriod``
    (seconds, default 10; 0: not by time), ``allowRemotePaths``.
    ``configure`` takes the two rotation settings and ``{"rotateKey": true}``.
    """

    PATH_KEYS = ("publicKeyFile", "signingKeyFile", "signingKeyPassphraseEnv")

    def __init__(self, configDict=None):
        super().__init__(configDict)
        config = self.configDict
        self.allow_remote_paths = bool(config.get("allowRemotePaths", False))
        if not config.get("publicKeyFile"):
            raise ConfigurationError("Encryptor needs \"publicKeyFile\" (the receiver's RSA public key)")
        require_crypto()
        from Crypto.Cipher import AES  # pylint: disable=import-outside-toplevel
        from Crypto.Hash import SHA256  # pylint: disable=import-outside-toplevel
        self._aes, self._sha256, self._signer = AES, SHA256, None
        self._load_keys(config)
        self.rotation_frames, self.rotation_period = 0, 10.0
        self._set_rotation(config)
        self.session = os.urandom(8)
        self.sequence = 0
        self._key = self._wrapped = None
        self._key_frames, self._key_time, self._nonce_count = 0, 0.0, 0
        self._buffer = np.empty(0, np.uint8)
        self._last_size = 0
        self._output = pva.PvObject(ENCRYPTED_TYPE)
        self.encrypted = Throughput()
        self.bytes_out = self.n_keys = self.n_errors = 0
        self.last_error = ""

    def _set_rotation(self, config):
        frames = int_arg(config, "keyRotationFrames", self.rotation_frames, minimum=0)
        period = config.get("keyRotationPeriod", self.rotation_period)
        if isinstance(period, bool) or not isinstance(period, (int, float)) or period < 0:
            raise ValueError(f"keyRotationPeriod must be seconds >= 0, got {period!r}")
        self.rotation_frames, self.rotation_period = frames, float(period)

    def _load_keys(self, config):
        from Crypto.Cipher import PKCS1_OAEP  # pylint: disable=import-outside-toplevel
        from Crypto.Signature import pss  # pylint: disable=import-outside-toplevel
        if config.get("publicKeyFile"):
            key = load_key(config["publicKeyFile"], False)
            self._wrapper, self._key = PKCS1_OAEP.new(key, hashAlgo=self._sha256), None
        if config.get("signingKeyFile"):
            self._signer = pss.new(load_key(config["signingKeyFile"], True,
                                            config.get("signingKeyPassphraseEnv")))

    def configure(self, configDict):
        refuse_remote_paths(configDict, self.PATH_KEYS, self.allow_remote_paths, "Encryptor")
        self._set_rotation(configDict)
        self._load_keys(configDict)
        if configDict.get("rotateKey"):
            self._key = None

    def _current_key(self):
        """The AES key, a new one when the rotation is due."""
        now = time.monotonic()
        if (self._key is None or (self.rotation_frames and self._key_frames >= self.rotation_frames)
                or (self.rotation_period and now - self._key_time >= self.rotation_period)):
            self._key = os.urandom(32)
            self._wrapped = np.frombuffer(self._wrapper.encrypt(self._key), np.uint8)
            self._key_frames, self._key_time, self._nonce_count = 0, now, 0
            self.n_keys += 1
        self._key_frames += 1
        self._nonce_count += 1
        return self._key

    def process(self, pvObject):
        started = time.perf_counter()
        try:
            output = self.encrypt(pvObject)
        except Exception as exc:
            self.n_errors += 1
            self.last_error = f"frame {pvObject.getInt('uniqueId')}: {type(exc).__name__}: {exc}"
            raise
        self.encrypted.add(self._last_size, time.perf_counter() - started)
        self.updateOutputChannel(output)
        return output

    def encrypt(self, nt):
        """Return the encrypted object for NTNDArray ``nt`` (a reused PvObject)."""
        meta, pixels = serialize_frame(nt)
        key = self._current_key()
        self.sequence += 1
        nonce = self._nonce_count.to_bytes(12, "big")
        unique_id = nt.getInt("uniqueId")
        seconds, nanoseconds = nt.getLong("timeStamp.secondsPastEpoch"), nt.getInt("timeStamp.nanoseconds")
        header = HEADER.pack(MAGIC, VERSION, SIGNED if self._signer else 0, self.session,
                             self.sequence, nonce, unique_id, seconds, nanoseconds,
                             nt.getInt("timeStamp.userTag"))
        size = len(meta) + len(pixels)
        self._buffer = buffer = _grow(self._buffer, size)
        cipher = self._aes.new(key, self._aes.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(header)
        view = memoryview(buffer)
        cipher.encrypt(meta, output=view[:len(meta)])
        cipher.encrypt(pixels, output=view[len(meta):size])
        tag = cipher.digest()
        out = self._output
        out["header"] = np.frombuffer(header, np.uint8)
        out["wrappedKey"] = self._wrapped
        out["tag"] = np.frombuffer(tag, np.uint8)
        out["ciphertext"] = buffer[:size]
        if self._signer is not None:
            digest = signed_digest(self._sha256, header, self._wrapped, tag, view[:size])
            out["signature"] = np.frombuffer(self._signer.sign(digest), np.uint8)
        out.setInt("uniqueId", unique_id)
        out.setLong("timeStamp.secondsPastEpoch", seconds)
        out.setInt("timeStamp.nanoseconds", nanoseconds)
        self._last_size = size
        self.bytes_out += size
        return out

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else pva.PvObject(ENCRYPTED_TYPE)

    def resetStats(self):
        self.encrypted.reset()
        self.bytes_out = self.n_errors = 0
        self.last_error = ""

    def getStats(self):
        e = self.encrypted
        return {"nEncrypted": e.frames, "nErrors": self.n_errors, "nKeys": self.n_keys,
                "signed": self._signer is not None, "bytesOut": self.bytes_out,
                "encryptedRate": e.frame_rate(), "encryptMBps": e.busy_mb_rate(),
                "lastError": self.last_error}

    def getStatsPvaTypes(self):
        return {"nEncrypted": pva.ULONG, "nErrors": pva.ULONG, "nKeys": pva.ULONG,
                "signed": pva.BOOLEAN, "bytesOut": pva.ULONG, "encryptedRate": pva.DOUBLE,
                "encryptMBps": pva.DOUBLE, "lastError": pva.STRING}


class Decryptor(UserDataProcessor):
    """Check and decrypt the objects of an :class:`Encryptor` (see the module docstring).

    Args: ``privateKeyFile`` (own RSA private key, required),
    ``privateKeyPassphraseEnv``, ``verifyKeyFile`` (sender's RSA public key:
    signatures required), ``replayWindow`` (default 4096), ``maxAge``
    (seconds, default 0: no age check), ``allowRemotePaths``.
    """

    PATH_KEYS = ("privateKeyFile", "privateKeyPassphraseEnv", "verifyKeyFile")
    REASONS = ("nMalformed", "nTampered", "nUnsigned", "nReplayed", "nStale")

    def __init__(self, configDict=None):
        super().__init__(configDict)
        config = self.configDict
        self.allow_remote_paths = bool(config.get("allowRemotePaths", False))
        if not config.get("privateKeyFile"):
            raise ConfigurationError("Decryptor needs \"privateKeyFile\" (its own RSA private key)")
        require_crypto()
        from Crypto.Cipher import AES  # pylint: disable=import-outside-toplevel
        from Crypto.Hash import SHA256  # pylint: disable=import-outside-toplevel
        self._aes, self._sha256, self._verifier = AES, SHA256, None
        self._load_keys(config)
        self.replay_window, self.max_age = 4096, 0.0
        self._set_checks(config)
        self._keys = OrderedDict()  # wrapped key bytes -> AES key
        self._sessions = OrderedDict()  # sender session -> [highest sequence, seen set]
        self._plain = np.empty(0, np.uint8)
        self._output = pva.NtNdArray()
        self._cache = {}
        self.decrypted = Throughput()
        self.rejected = dict.fromkeys(self.REASONS, 0)
        self.n_unwraps = 0
        self.last_rejection = ""

    def _load_keys(self, config):
        from Crypto.Cipher import PKCS1_OAEP  # pylint: disable=import-outside-toplevel
        from Crypto.Signature import pss  # pylint: disable=import-outside-toplevel
        if config.get("privateKeyFile"):
            key = load_key(config["privateKeyFile"], True, config.get("privateKeyPassphraseEnv"))
            self._unwrapper = PKCS1_OAEP.new(key, hashAlgo=self._sha256)
            self._keys = OrderedDict()
        if config.get("verifyKeyFile"):
            self._verifier = pss.new(load_key(config["verifyKeyFile"], False))

    def _set_checks(self, config):
        window = int_arg(config, "replayWindow", self.replay_window, minimum=1)
        age = config.get("maxAge", self.max_age)
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
            raise ValueError(f"maxAge must be seconds >= 0, got {age!r}")
        self.replay_window, self.max_age = window, float(age)

    def configure(self, configDict):
        refuse_remote_paths(configDict, self.PATH_KEYS, self.allow_remote_paths, "Decryptor")
        self._set_checks(configDict)
        self._load_keys(configDict)

    def process(self, pvObject):
        started = time.perf_counter()
        try:
            nt = self.decrypt(pvObject)
        except Rejected as exc:
            self.rejected[exc.reason] += 1
            self.last_rejection = f"object {pvObject.getInt('uniqueId')} rejected: {exc}"
            raise Rejected(exc.reason, self.last_rejection) from None
        self.decrypted.add(len(pvObject["ciphertext"]), time.perf_counter() - started)
        self.deliver(nt)
        return nt

    def deliver(self, nt):
        """Called with each verified, decrypted frame: publishes it. Override to use it in place."""
        self.updateOutputChannel(nt)

    def decrypt(self, obj):
        """Check ``obj`` and return the decrypted NTNDArray (reused); Rejected otherwise."""
        try:
            header, wrapped, tag = obj["header"], obj["wrappedKey"], obj["tag"]
            ciphertext, signature = obj["ciphertext"], obj["signature"]
            unique_id, seconds = obj.getInt("uniqueId"), obj.getLong("timeStamp.secondsPastEpoch")
            nanoseconds = obj.getInt("timeStamp.nanoseconds")
        except Exception as exc:  # another structure: whatever pvaccess raises
            raise Rejected("nMalformed", f"not an encrypted frame ({type(exc).__name__}: {exc})") from None
        if len(header) != HEADER.size or len(tag) != TAG_BYTES or not len(wrapped) or len(ciphertext) < 4:
            raise Rejected("nMalformed", "fields are missing or truncated")
        header = header.tobytes()
        magic, version, flags, session, sequence, nonce, uid, sec, nsec, user_tag = HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise Rejected("nMalformed", f"unknown format {magic!r} version {version}")
        if self._verifier is not None:
            if not len(signature) or not flags & SIGNED:
                raise Rejected("nUnsigned", "the object is not signed and a signature is required")
            digest = signed_digest(self._sha256, header, wrapped, tag, memoryview(ciphertext))
            try:
                self._verifier.verify(digest, signature.tobytes())
            except (ValueError, TypeError):
                raise Rejected("nTampered", "the signature does not verify") from None
        cipher = self._aes.new(self._unwrap(wrapped), self._aes.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(header)
        size = len(ciphertext)
        self._plain = plain = _grow(self._plain, size)
        cipher.decrypt(memoryview(ciphertext), output=memoryview(plain)[:size])
        try:
            cipher.verify(tag.tobytes())
        except ValueError:
            raise Rejected("nTampered", "the GCM tag does not match: data or header changed") from None
        if (unique_id, seconds, nanoseconds) != (uid, sec, nsec):
            raise Rejected("nTampered", "clear uniqueId or timeStamp differ from the signed header")
        seen = self._check_replay(session, sequence)
        if self.max_age and abs(time.time() - sec - nsec * 1e-9) > self.max_age:
            raise Rejected("nStale", f"time stamp is more than {self.max_age:g} s from now")
        try:
            nt = restore_frame(plain[:size], self._output, self._cache)
        except MalformedFrame as exc:
            raise Rejected("nMalformed", f"authenticated plaintext is malformed: {exc}") from None
        nt.setInt("uniqueId", uid)
        nt.setLong("timeStamp.secondsPastEpoch", sec)
        nt.setInt("timeStamp.nanoseconds", nsec)
        nt.setInt("timeStamp.userTag", user_tag)
        seen[1].add(sequence)
        seen[0] = max(seen[0], sequence)
        if len(seen[1]) > 2 * self.replay_window:
            seen[1] = {s for s in seen[1] if s > seen[0] - self.replay_window}
        return nt

    def _unwrap(self, wrapped):
        """The AES key inside ``wrapped`` (cached per wrapped key)."""
        data = wrapped.tobytes()
        key = self._keys.get(data)
        if key is None:
            try:
                key = self._unwrapper.decrypt(data)
            except (ValueError, TypeError):
                raise Rejected("nTampered", "the wrapped key does not unwrap with our private key"
                               ) from None
            if len(key) != 32:
                raise Rejected("nTampered", "the wrapped key is not an AES-256 key")
            self.n_unwraps += 1
            self._keys[data] = key
            if len(self._keys) > 8:
                self._keys.popitem(last=False)
        return key

    def _check_replay(self, session, sequence):
        """Reject a sequence number seen before (or too old); return the session's record."""
        seen = self._sessions.get(session)
        if seen is None:
            seen = self._sessions[session] = [0, set()]
            if len(self._sessions) > 64:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(session)
        if sequence <= seen[0] - self.replay_window or sequence in seen[1]:
            raise Rejected("nReplayed", f"sequence number {sequence} was seen before (replay)")
        return seen

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else pva.NtNdArray()

    def resetStats(self):
        self.decrypted.reset()
        self.rejected = dict.fromkeys(self.REASONS, 0)
        self.n_unwraps = 0
        self.last_rejection = ""

    def getStats(self):
        d = self.decrypted
        return dict(self.rejected, nDecrypted=d.frames, nRejected=sum(self.rejected.values()),
                    nKeyUnwraps=self.n_unwraps, decryptedRate=d.frame_rate(),
                    decryptMBps=d.busy_mb_rate(), lastRejection=self.last_rejection)

    def getStatsPvaTypes(self):
        return dict(dict.fromkeys(self.REASONS, pva.ULONG), nDecrypted=pva.ULONG, nRejected=pva.ULONG,
                    nKeyUnwraps=pva.ULONG, decryptedRate=pva.DOUBLE, decryptMBps=pva.DOUBLE,
                    lastRejection=pva.STRING)
