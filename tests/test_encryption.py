"""Encryptor and decryptor: exact round trips, key rotation, and every kind of bad object."""

import signal
import time

import numpy as np
import pvaccess as pva
import pytest

from conftest import read_stats_lines, wait_for
from test_codecs import Collector, finish, start_consumer, start_sim, wait_connected

pytest.importorskip("Crypto")

from Crypto.PublicKey import RSA  # noqa: E402

from pvaflow.hpc import codecs, ntndarray  # noqa: E402
from pvaflow.hpc.errors import ConfigurationError  # noqa: E402
from pvaflow.processors.encryption import ENCRYPTED_TYPE, Decryptor, Encryptor, Rejected  # noqa: E402
from pvaflow.processors.frame_bytes import MalformedFrame, restore_frame, serialize_frame  # noqa: E402


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """PEM files: receiver and sender key pairs, a stranger's pair, a weak key, a locked key."""
    folder = tmp_path_factory.mktemp("keys")
    paths = {}
    for name in ("receiver", "sender", "stranger"):
        key = RSA.generate(2048)
        (folder / f"{name}_private.pem").write_bytes(key.export_key())
        (folder / f"{name}_public.pem").write_bytes(key.publickey().export_key())
        paths[name] = str(folder / f"{name}_private.pem")
        paths[f"{name}_public"] = str(folder / f"{name}_public.pem")
    (folder / "weak.pem").write_bytes(RSA.generate(1024).export_key())
    paths["weak"] = str(folder / "weak.pem")
    locked = RSA.import_key(open(paths["receiver"], "rb").read())
    (folder / "locked.pem").write_bytes(locked.export_key(passphrase="s3cret", pkcs=8,
                                                          protection="scryptAndAES128-CBC"))
    paths["locked"] = str(folder / "locked.pem")
    return paths


def pair(keys, signed=True, **encryptor_args):
    encryptor = Encryptor(dict({"publicKeyFile": keys["receiver_public"]},
                               **({"signingKeyFile": keys["sender"]} if signed else {}), **encryptor_args))
    decryptor = Recording(dict({"privateKeyFile": keys["receiver"]},
                               **({"verifyKeyFile": keys["sender_public"]} if signed else {})))
    return encryptor, decryptor


class Recording(Decryptor):
    """A decryptor that keeps (uniqueId, image copy) of what it delivers."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.delivered = []

    def deliver(self, nt):
        self.delivered.append((nt.getInt("uniqueId"), codecs.pixels(nt).copy()))


def rich_frame(uid=5):
    """A frame using every NTNDArray feature the encrypted format carries."""
    image = np.random.default_rng(uid).integers(0, 2**31, (30, 20, 3), dtype=np.int32)
    nt = ntndarray.new_ntndarray(image, unique_id=uid, timestamp=1700000000.125,
                                 color_mode=ntndarray.ColorMode.RGB1)
    attributes = nt["attribute"]
    for name, value in (("f", pva.PvFloat(1.5)), ("u16", pva.PvUShort(65000)), ("b", pva.PvBoolean(True)),
                        ("l", pva.PvLong(-2**40)), ("ul", pva.PvULong(2**63)), ("s", pva.PvString("é x")),
                        ("by", pva.PvByte("\x05")), ("d", pva.PvDouble(2.25))):
        attribute = pva.NtAttribute(name, value)
        attribute["descriptor"], attribute["source"], attribute["sourceType"] = f"about {name}", "src", 2
        attributes.append(attribute)
    nt["attribute"] = attributes
    nt["dimension"] = [{"size": s, "offset": 1, "fullSize": s + 2, "binning": 2, "reverse": True}
                       for s in (3, 20, 30)]
    nt.setString("descriptor", "rich frame")
    nt.setInt("timeStamp.userTag", 17)
    nt.setLong("dataTimeStamp.secondsPastEpoch", 99)
    nt.setInt("dataTimeStamp.nanoseconds", 123)
    nt.setInt("dataTimeStamp.userTag", 4)
    return nt, image


def comparable(nt):
    """Every field of an NTNDArray except the pixels, as plain Python."""
    return {key: nt[key] for key in ("uniqueId", "codec", "compressedSize", "uncompressedSize",
                                     "dimension", "descriptor", "timeStamp", "dataTimeStamp")} | {
        "attribute": [(a["name"], a["value"], a["descriptor"], a["source"], a["sourceType"])
                      for a in nt["attribute"]]}


# ------------------------------------------------------------------ round trips
def test_every_field_survives_encryption(keys):
    encryptor, decryptor = pair(keys)
    nt, image = rich_frame()
    expected = comparable(nt)
    decrypted = decryptor.decrypt(encryptor.encrypt(nt))
    assert comparable(decrypted) == expected
    assert np.array_equal(ntndarray.image_view(decrypted), image)


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float32, np.float64, np.uint64])
def test_round_trip_types_and_compressed_frames(keys, dtype):
    encryptor, decryptor = pair(keys, signed=False)
    image = np.random.default_rng(1).poisson(100, (64, 48)).astype(dtype)
    decryptor.process(encryptor.process(ntndarray.new_ntndarray(image, unique_id=1)))
    packed = codecs.Encoder("bslz4").fill(ntndarray.new_ntndarray(image, unique_id=2), image)
    decrypted = decryptor.decrypt(encryptor.encrypt(packed))
    assert ntndarray.codec_of(decrypted) == ("bslz4", np.dtype(dtype))  # stays compressed
    assert [uid for uid, _ in decryptor.delivered] == [1]
    assert np.array_equal(decryptor.delivered[0][1], image)
    assert np.array_equal(codecs.pixels(decrypted), image)


def test_key_rotation_by_frames_and_time(keys):
    encryptor, decryptor = pair(keys, keyRotationFrames=1)
    for uid in range(1, 5):
        decryptor.process(encryptor.process(ntndarray.new_ntndarray(np.full((4, 4), uid, np.uint8),
                                                                    unique_id=uid)))
    assert encryptor.getStats()["nKeys"] == 4 and decryptor.getStats()["nKeyUnwraps"] == 4
    encryptor.configure({"keyRotationFrames": 0, "keyRotationPeriod": 0.2})
    for uid in range(5, 9):
        decryptor.process(encryptor.process(ntndarray.new_ntndarray(np.zeros((4, 4), np.uint8),
                                                                    unique_id=uid)))
    assert encryptor.getStats()["nKeys"] == 4  # frame 4's key goes on for frames 5-8
    time.sleep(0.25)
    decryptor.process(encryptor.process(ntndarray.new_ntndarray(np.zeros((4, 4), np.uint8), unique_id=9)))
    encryptor.configure({"rotateKey": True})
    decryptor.process(encryptor.process(ntndarray.new_ntndarray(np.zeros((4, 4), np.uint8), unique_id=10)))
    assert encryptor.getStats()["nKeys"] == 6 and decryptor.getStats()["nDecrypted"] == 10
    assert decryptor.getStats()["nKeyUnwraps"] == 6
    assert [uid for uid, _ in decryptor.delivered] == list(range(1, 11))


# ---------------------------------------------------------------- bad objects
def _flip(obj, field, index=0):
    data = obj[field].copy()
    data[index] ^= 0x40
    obj[field] = data


TAMPERING = {
    "ciphertext": (lambda o: _flip(o, "ciphertext", 200), "nTampered", "signature"),
    "header": (lambda o: _flip(o, "header", 30), "nTampered", "signature"),
    "wrappedKey": (lambda o: _flip(o, "wrappedKey", 9), "nTampered", "signature"),
    "tag": (lambda o: _flip(o, "tag", 3), "nTampered", "signature"),
    "signature": (lambda o: _flip(o, "signature", 5), "nTampered", "signature"),
    "clear uniqueId": (lambda o: o.setInt("uniqueId", 999), "nTampered", "clear uniqueId"),
    "clear timeStamp": (lambda o: o.setInt("timeStamp.nanoseconds", 1), "nTampered", "clear"),
    "truncated ciphertext": (lambda o: o.__setitem__("ciphertext", o["ciphertext"][:-10]),
                             "nTampered", "signature"),
    "truncated tag": (lambda o: o.__setitem__("tag", o["tag"][:8]), "nMalformed", "truncated"),
    "no wrapped key": (lambda o: o.__setitem__("wrappedKey", np.zeros(0, np.uint8)), "nMalformed",
                       "missing"),
    "unsigned": (lambda o: o.__setitem__("signature", np.zeros(0, np.uint8)), "nUnsigned", "not signed"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_objects_are_rejected_and_never_delivered(keys, case):
    change, reason, message = TAMPERING[case]
    encryptor, decryptor = pair(keys)
    good = ntndarray.new_ntndarray(np.arange(600, dtype=np.uint16).reshape(20, 30), unique_id=1)
    decryptor.process(encryptor.process(good))
    bad = encryptor.process(ntndarray.new_ntndarray(np.zeros((20, 30), np.uint16), unique_id=2))
    change(bad)
    with pytest.raises(Rejected, match=message) as raised:
        decryptor.process(bad)
    assert raised.value.reason == reason
    stats = decryptor.getStats()
    assert stats[reason] == 1 and stats["nRejected"] == 1 and stats["nDecrypted"] == 1
    assert [uid for uid, _ in decryptor.delivered] == [1]


def test_without_signatures_gcm_catches_changes(keys):
    encryptor, decryptor = pair(keys, signed=False)
    for field, index in (("ciphertext", 0), ("header", 20), ("tag", 15)):
        obj = encryptor.process(ntndarray.new_ntndarray(np.ones((8, 8), np.uint8), unique_id=3))
        _flip(obj, field, index)
        with pytest.raises(Rejected, match="GCM tag") as raised:
            decryptor.process(obj)
        assert raised.value.reason == "nTampered"
    assert decryptor.delivered == [] and decryptor.getStats()["nTampered"] == 3


def test_replays_strangers_and_stale_objects(keys):
    encryptor, decryptor = pair(keys)
    first = encryptor.process(ntndarray.new_ntndarray(np.ones((4, 4), np.uint8), unique_id=1))
    copy = pva.PvObject(first.getStructureDict(), first.toDict())
    decryptor.process(first)
    with pytest.raises(Rejected, match="seen before") as raised:
        decryptor.process(copy)
    assert raised.value.reason == "nReplayed"
    # Encrypted for someone else, or signed by someone else.
    other = Encryptor({"publicKeyFile": keys["stranger_public"], "signingKeyFile": keys["sender"]})
    with pytest.raises(Rejected, match="does not unwrap"):
        Decryptor({"privateKeyFile": keys["receiver"]}).process(
            other.process(ntndarray.new_ntndarray(np.ones((4, 4), np.uint8), unique_id=2)))
    forger = Encryptor({"publicKeyFile": keys["receiver_public"], "signingKeyFile": keys["stranger"]})
    with pytest.raises(Rejected, match="signature does not verify"):
        decryptor.process(forger.process(ntndarray.new_ntndarray(np.ones((4, 4), np.uint8), unique_id=3)))
    # Not an encrypted object at all.
    with pytest.raises(Rejected, match="not an encrypted frame") as raised:
        decryptor.process(ntndarray.new_ntndarray(np.ones((4, 4), np.uint8), unique_id=4))
    assert raised.value.reason == "nMalformed"
    # Old time stamps, when an age limit is set.
    decryptor.configure({"maxAge": 5})
    old = ntndarray.new_ntndarray(np.ones((4, 4), np.uint8), unique_id=5, timestamp=time.time() - 60)
    with pytest.raises(Rejected, match="more than 5 s") as raised:
        decryptor.process(encryptor.process(old))
    assert raised.value.reason == "nStale"
    recent = ntndarray.new_ntndarray(np.ones((4, 4), np.uint8), unique_id=6, timestamp=time.time())
    decryptor.process(encryptor.process(recent))
    assert [uid for uid, _ in decryptor.delivered] == [1, 6]
    stats = decryptor.getStats()
    assert (stats["nReplayed"], stats["nTampered"], stats["nMalformed"], stats["nStale"]) == (1, 1, 1, 1)


def test_replay_window(keys):
    encryptor, decryptor = pair(keys, signed=False)
    decryptor.configure({"replayWindow": 3})
    objects = []
    for uid in range(1, 7):
        obj = encryptor.process(ntndarray.new_ntndarray(np.ones((2, 2), np.uint8), unique_id=uid))
        objects.append(pva.PvObject(obj.getStructureDict(), obj.toDict()))
    for obj in objects[:2] + objects[3:]:  # 3 is late
        decryptor.process(obj)
    with pytest.raises(Rejected, match="seen before"):  # outside the window of 3 behind 6
        decryptor.process(objects[2])
    with pytest.raises(Rejected, match="seen before"):
        decryptor.process(objects[4])
    assert [uid for uid, _ in decryptor.delivered] == [1, 2, 4, 5, 6]


def test_malformed_plaintext_is_refused_without_changes():
    nt, _ = rich_frame()
    meta, pixels = serialize_frame(nt)
    whole = np.frombuffer(meta + bytes(pixels), np.uint8)
    target = ntndarray.new_ntndarray(np.zeros((2, 2), np.uint8), unique_id=1)
    before = comparable(target)
    for cut in (3, 10, len(meta) - 1):
        with pytest.raises(MalformedFrame):
            restore_frame(whole[:cut], target, {})
    with pytest.raises(MalformedFrame):
        restore_frame(whole[:-1], target, {})  # pixels not whole int32 elements
    assert comparable(target) == before


# -------------------------------------------------------------- configuration
def test_key_files_and_remote_configure(keys, monkeypatch):
    with pytest.raises(ConfigurationError, match="too weak"):
        Encryptor({"publicKeyFile": keys["weak"]})
    with pytest.raises(ConfigurationError, match="public key; a private key is needed"):
        Decryptor({"privateKeyFile": keys["receiver_public"]})
    with pytest.raises(ConfigurationError, match="cannot read RSA key"):
        Decryptor({"privateKeyFile": "/no/such/key.pem"})
    with pytest.raises(ConfigurationError, match="publicKeyFile"):
        Encryptor({})
    with pytest.raises(ConfigurationError, match="cannot read RSA key"):
        Decryptor({"privateKeyFile": keys["locked"]})
    monkeypatch.setenv("TEST_KEY_PASSPHRASE", "s3cret")
    Decryptor({"privateKeyFile": keys["locked"], "privateKeyPassphraseEnv": "TEST_KEY_PASSPHRASE"})
    encryptor, decryptor = pair(keys)
    for processor, key in ((encryptor, "publicKeyFile"), (decryptor, "verifyKeyFile")):
        with pytest.raises(PermissionError, match=f"{key} name files.*allowRemotePaths"):
            processor.configure({key: keys["stranger_public"]})
    with pytest.raises(ValueError, match="maxAge"):
        decryptor.configure({"maxAge": -1})
    allowed = Encryptor({"publicKeyFile": keys["stranger_public"], "allowRemotePaths": True})
    allowed.configure({"publicKeyFile": keys["receiver_public"]})
    decryptor_unsigned = Decryptor({"privateKeyFile": keys["receiver"]})
    decryptor_unsigned.decrypt(allowed.encrypt(ntndarray.new_ntndarray(np.ones((2, 2), np.uint8),
                                                                       unique_id=1)))


# -------------------------------------------------------------------- system
def test_sim_encrypt_decrypt_compare(procs, prefix, tmp_path, keys):
    frames = np.random.default_rng(21).integers(0, 4096, (3, 40, 30), dtype=np.uint16)
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, fps=100, runtime=2.0,
                             start_delay=3.0)
    encrypt = start_consumer(procs, f"{prefix}:image", "pvaflow.processors.encryption.Encryptor",
                             {"publicKeyFile": keys["receiver_public"], "signingKeyFile": keys["sender"],
                              "keyRotationFrames": 50}, tmp_path, output=f"{prefix}:secret", name="enc")
    wait_connected(encrypt[1])
    decrypt = start_consumer(procs, f"{prefix}:secret", "pvaflow.processors.encryption.Decryptor",
                             {"privateKeyFile": keys["receiver"], "verifyKeyFile": keys["sender_public"]},
                             tmp_path, output=f"{prefix}:clear", name="dec")
    wait_connected(decrypt[1])
    clear = Collector(f"{prefix}:clear", lambda v: (int(v.uniqueId), v.value.copy()))
    try:
        published, (enc, dec) = finish(procs, sim, summary, [encrypt, decrypt])
    finally:
        clear.close()
    assert enc["userStats"]["nEncrypted"] == published and enc["userStats"]["nKeys"] >= published // 50
    assert dec["userStats"]["nDecrypted"] == published and dec["userStats"]["nRejected"] == 0
    assert len(clear.items) >= published // 2
    for uid, value in clear.items:
        assert np.array_equal(value.reshape(40, 30), frames[(uid - 1) % 3])


def test_tampered_objects_on_the_network_are_counted(procs, prefix, tmp_path, keys):
    """A server in this process publishes good and bad objects to a decrypting consumer."""
    encryptor = Encryptor({"publicKeyFile": keys["receiver_public"], "signingKeyFile": keys["sender"]})
    channel = f"{prefix}:secret"
    server = pva.PvaServer()
    server.addRecord(channel, pva.PvObject(ENCRYPTED_TYPE))
    try:
        decrypt, stats = start_consumer(
            procs, channel, "pvaflow.processors.encryption.Decryptor",
            {"privateKeyFile": keys["receiver"], "verifyKeyFile": keys["sender_public"]}, tmp_path,
            name="dec")
        wait_connected(stats)
        # The consumer drops ids out of order before its processor: keep the clear ids right.
        bad_cases = [change for name, (change, _, _) in TAMPERING.items() if name != "clear uniqueId"]
        for uid in range(1, 21):
            obj = encryptor.process(ntndarray.new_ntndarray(np.full((16, 16), uid, np.uint8), unique_id=uid))
            if uid % 2 == 0:
                bad_cases[(uid // 2) % len(bad_cases)](obj)
            server.update(channel, obj)
            time.sleep(0.02)

        def handled():
            lines = read_stats_lines(stats)
            counts = lines[-1]["processorStats"] if lines else {"nProcessed": 0, "nErrors": 0}
            return counts["nProcessed"] + counts["nErrors"] >= 20

        wait_for(handled, 10, message="all 20 objects handled")
        decrypt.send_signal(signal.SIGINT)
        rc, out, err = procs.wait(decrypt, 15)
        assert rc == 0, err
    finally:
        server.stop()
    final = read_stats_lines(stats)[-1]
    user = final["userStats"]
    assert user["nDecrypted"] == 10 and user["nRejected"] == 10
    assert final["processorStats"]["nErrors"] == 10 and "rejected" in final["processorStats"]["lastError"]


def test_keys_made_with_openssl_as_documented(tmp_path):
    import shutil
    import subprocess
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    for name in ("receiver", "sender"):
        subprocess.run(["openssl", "genrsa", "-out", f"{name}_private.pem", "3072"], cwd=tmp_path,
                       check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", f"{name}_private.pem", "-pubout", "-out",
                        f"{name}_public.pem"], cwd=tmp_path, check=True, capture_output=True)
    encryptor = Encryptor({"publicKeyFile": str(tmp_path / "receiver_public.pem"),
                           "signingKeyFile": str(tmp_path / "sender_private.pem")})
    decryptor = Decryptor({"privateKeyFile": str(tmp_path / "receiver_private.pem"),
                           "verifyKeyFile": str(tmp_path / "sender_public.pem")})
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    decrypted = decryptor.decrypt(encryptor.encrypt(ntndarray.new_ntndarray(image, unique_id=1)))
    assert np.array_equal(ntndarray.image_view(decrypted), image)
