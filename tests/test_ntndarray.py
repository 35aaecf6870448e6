"""NTNDArray <-> numpy conversion (pvaflow.hpc.ntndarray).

Shapes are deliberately non-square (nx=7, ny=5) and no axis has size 3 unless
it is the colour axis, so a transposed or mis-ordered dimension shows up.
"""

import gc
import uuid

import numpy as np
import pvaccess as pva
import pytest

from pvaflow.hpc import ntndarray as nd
from pvaflow.hpc.errors import FrameFormatError

NX, NY = 7, 5

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
FLOAT_DTYPES = [np.float32, np.float64]
ALL_DTYPES = INT_DTYPES + FLOAT_DTYPES

#: The value-union member areaDetector / normative types use for each dtype.
EXPECTED_FIELD = {
    np.int8: "byteValue", np.uint8: "ubyteValue", np.int16: "shortValue",
    np.uint16: "ushortValue", np.int32: "intValue", np.uint32: "uintValue",
    np.int64: "longValue", np.uint64: "ulongValue", np.float32: "floatValue",
    np.float64: "doubleValue",
}

#: pvData ScalarType numbers (pv/pvIntrospect.h), as NDPluginCodec stores them.
PVDATA_SCALAR_TYPE = {
    np.int8: 1, np.int16: 2, np.int32: 3, np.int64: 4, np.uint8: 5, np.uint16: 6,
    np.uint32: 7, np.uint64: 8, np.float32: 9, np.float64: 10,
}

# mode -> (numpy shape, expected NTNDArray dimension sizes), per areaDetector.
COLOR_LAYOUTS = {
    nd.ColorMode.RGB1: ((NY, NX, 3), [3, NX, NY]),
    nd.ColorMode.RGB2: ((NY, 3, NX), [NX, 3, NY]),
    nd.ColorMode.RGB3: ((3, NY, NX), [NX, NY, 3]),
}


def make_image(dtype, shape):
    """Distinct values everywhere, plus the extremes of the type."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    image = np.arange(size).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        image[0] = info.min
        image[1] = info.max
        image[2] = info.max - 1
        if dtype.kind == "i":
            image[3] = info.min + 1
    else:
        info = np.finfo(dtype)
        image[0] = np.nan
        image[1] = np.inf
        image[2] = -np.inf
        image[3] = info.max
        image[4] = info.tiny
        image[5] = -0.0
        image[6] = info.min
        image[7] = 0.1  # not exactly representable: checks no float32<->64 round trip
    return image.reshape(shape)


def assert_bits_equal(actual, expected):
    """Same dtype, shape and bytes: exact, NaN and -0.0 included."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


def dimension_sizes(nt):
    return [d["size"] for d in nt["dimension"]]


# --------------------------------------------------------------------------- mono


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_mono_round_trip_all_dtypes(dtype):
    image = make_image(dtype, (NY, NX))
    nt = nd.new_ntndarray(image, unique_id=17)
    assert nt.getSelectedUnionFieldName("value") == EXPECTED_FIELD[dtype]
    assert dimension_sizes(nt) == [NX, NY]
    for d in nt["dimension"]:
        assert d["offset"] == 0 and d["binning"] == 1 and d["fullSize"] == d["size"]
    assert nd.attributes_of(nt)["ColorMode"] == int(nd.ColorMode.MONO)
    assert nd.color_mode_of(nt) == nd.ColorMode.MONO
    assert nt["uniqueId"] == 17
    assert nt["compressedSize"] == image.nbytes
    assert nt["uncompressedSize"] == image.nbytes
    # x is the fastest axis: the flat value is the image in C order
    flat = nt["value"][0][EXPECTED_FIELD[dtype]]
    assert_bits_equal(flat, image.reshape(-1))
    view = nd.image_view(nt)
    assert_bits_equal(view, image)
    assert view[1, 0] == image.reshape(-1)[NX]  # row 1 starts after NX pixels


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_values_survive(dtype):
    image = make_image(dtype, (NY, NX))
    view = nd.image_view(nd.new_ntndarray(image))
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        assert view.flat[0] == info.min
        assert view.flat[1] == info.max
        # Python ints compare exactly, also for 64-bit values beyond float precision
        assert int(view.flat[2]) == int(info.max) - 1
    else:
        assert np.isnan(view.flat[0])
        assert view.flat[1] == np.inf and view.flat[2] == -np.inf
        assert view.flat[3] == np.finfo(dtype).max
        assert np.signbit(view.flat[5]) and view.flat[5] == 0
        assert view.flat[7] == np.dtype(dtype).type(0.1)


def test_non_contiguous_input_keeps_pixel_order():
    base = make_image(np.uint16, (NX, NY))
    image = base.T  # (NY, NX), Fortran-ordered view
    assert not image.flags.c_contiguous
    assert_bits_equal(nd.image_view(nd.new_ntndarray(image)), np.ascontiguousarray(image))
    rows = make_image(np.int32, (3 * NY, NX))[NY:2 * NY]  # contiguous, offset into its base
    assert_bits_equal(nd.image_view(nd.new_ntndarray(rows)), rows)
    every_other_row = make_image(np.int32, (2 * NY, NX + 1))[::2, 1:]  # reshape(-1) copies
    assert_bits_equal(nd.image_view(nd.new_ntndarray(every_other_row)),
                      np.ascontiguousarray(every_other_row))


@pytest.mark.parametrize("case", ["every_other_column", "column"])
def test_uniformly_strided_input_keeps_pixel_order(case):
    if case == "every_other_column":
        image = make_image(np.int32, (NY, 2 * NX))[:, ::2]  # (NY, NX), strides (2*NX*4, 8)
    else:
        image = make_image(np.int64, (NX, NY))[:, 0]  # 1-D, stride NY*8
    assert image.reshape(-1).base is not None  # reshape gives a (strided) view
    assert_bits_equal(nd.image_view(nd.new_ntndarray(image)), np.ascontiguousarray(image))


def test_one_dimensional_image():
    image = make_image(np.float64, (3 * NX,))
    nt = nd.new_ntndarray(image)
    assert dimension_sizes(nt) == [3 * NX]
    assert_bits_equal(nd.image_view(nt), image)


def test_new_ntndarray_copies_the_pixels():
    image = make_image(np.int16, (NY, NX))
    expected = image.copy()
    nt = nd.new_ntndarray(image)
    view = nd.image_view(nt)
    assert not np.shares_memory(view, image)
    image[...] = 0
    assert_bits_equal(nd.image_view(nt), expected)


# ------------------------------------------------------------------------- colour


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", list(COLOR_LAYOUTS), ids=lambda m: m.name)
def test_color_round_trip(mode, dtype):
    shape, dims = COLOR_LAYOUTS[mode]
    image = make_image(dtype, shape)
    nt = nd.new_ntndarray(image, color_mode=mode)
    assert dimension_sizes(nt) == dims
    assert nd.attributes_of(nt)["ColorMode"] == int(mode)
    assert nd.color_mode_of(nt) == mode
    assert nt.getSelectedUnionFieldName("value") == EXPECTED_FIELD[dtype]
    assert_bits_equal(nd.image_view(nt), image)


@pytest.mark.parametrize("mode", list(COLOR_LAYOUTS), ids=lambda m: m.name)
def test_color_interleaving_in_flat_buffer(mode):
    """The flat buffer follows areaDetector's pixel/row/plane interleaving."""
    shape, _ = COLOR_LAYOUTS[mode]
    # pixel value encodes (colour, y, x): c*10000 + y*100 + x
    c, y, x = np.meshgrid(np.arange(3), np.arange(NY), np.arange(NX), indexing="ij")
    planes = (c * 10000 + y * 100 + x).astype(np.int32)  # (3, NY, NX)
    if mode == nd.ColorMode.RGB1:
        image = planes.transpose(1, 2, 0)  # (NY, NX, 3)
    elif mode == nd.ColorMode.RGB2:
        image = planes.transpose(1, 0, 2)  # (NY, 3, NX)
    else:
        image = planes  # (3, NY, NX)
    assert image.shape == shape
    nt = nd.new_ntndarray(image, color_mode=mode)
    flat = nt["value"][0]["intValue"]
    if mode == nd.ColorMode.RGB1:  # pixel interleaved: R G B of pixel (0,0), then (0,1)
        assert list(flat[:6]) == [0, 10000, 20000, 1, 10001, 20001]
    elif mode == nd.ColorMode.RGB2:  # row interleaved: red row 0, green row 0, blue row 0
        assert list(flat[:NX]) == list(range(NX))
        assert list(flat[NX:2 * NX]) == [10000 + i for i in range(NX)]
        assert flat[3 * NX] == 100  # red row 1
    else:  # plane interleaved: whole red plane first
        assert list(flat[:NX * NY]) == list(planes[0].reshape(-1))
        assert flat[NX * NY] == 10000
    view = nd.image_view(nt)
    assert_bits_equal(view, np.ascontiguousarray(image))


@pytest.mark.parametrize("mode,shape", [
    (nd.ColorMode.RGB1, (3, NY, NX)),
    (nd.ColorMode.RGB1, (NY, 3, NX)),
    (nd.ColorMode.RGB2, (NY, NX, 3)),
    (nd.ColorMode.RGB2, (3, NY, NX)),
    (nd.ColorMode.RGB3, (NY, NX, 3)),
    (nd.ColorMode.RGB3, (NY, 3, NX)),
    (nd.ColorMode.RGB1, (NY, NX)),
    (nd.ColorMode.RGB3, (3, NY, NX, 1)),
    (nd.ColorMode.MONO, (NY, NX, 3)),
])
def test_wrong_color_mode_shape_is_rejected(mode, shape):
    with pytest.raises(FrameFormatError):
        nd.new_ntndarray(np.zeros(shape, np.uint8), color_mode=mode)


def test_three_dimensional_image_needs_a_color_mode():
    with pytest.raises(FrameFormatError, match="colour mode"):
        nd.new_ntndarray(np.zeros((NY, NX, 3), np.uint8))


# --------------------------------------------------------------------- zero copy


def test_image_view_is_a_read_only_zero_copy_view():
    nt = nd.new_ntndarray(make_image(np.uint16, (NY, NX)))
    first, second = nd.image_view(nt), nd.image_view(nt)
    assert np.shares_memory(first, second)
    assert first.__array_interface__["data"][0] == second.__array_interface__["data"][0]
    assert not first.flags.writeable
    with pytest.raises(ValueError):
        first[0, 0] = 1


def test_image_view_outlives_the_ntndarray():
    image = make_image(np.uint32, (100, 1000))
    view = nd.image_view(nd.new_ntndarray(image))
    gc.collect()
    others = [nd.new_ntndarray(np.full((100, 1000), 7, np.uint32)) for _ in range(5)]
    assert_bits_equal(view, image)
    del others


# ----------------------------------------------------------------------- set_image


def test_set_image_changes_shape_and_dtype():
    nt = nd.new_ntndarray(make_image(np.uint8, (NY, NX)), unique_id=3)
    old_view = nd.image_view(nt)
    old_copy = old_view.copy()
    replacement = make_image(np.float32, (NX + 4, NY - 2))  # (11, 3): transposed-ish
    nd.set_image(nt, replacement)
    assert dimension_sizes(nt) == [NY - 2, NX + 4]
    assert nt.getSelectedUnionFieldName("value") == "floatValue"
    assert nt["compressedSize"] == replacement.nbytes == nt["uncompressedSize"]
    assert_bits_equal(nd.image_view(nt), replacement)
    assert nt["uniqueId"] == 3
    # views taken before stay valid and unchanged
    assert_bits_equal(old_view, old_copy)


def test_set_image_same_shape_other_values():
    nt = nd.new_ntndarray(np.zeros((NY, NX), np.int64))
    image = make_image(np.int64, (NY, NX))
    nd.set_image(nt, image)
    assert dimension_sizes(nt) == [NX, NY]
    assert_bits_equal(nd.image_view(nt), image)


def test_set_image_switches_color_mode():
    shape1, _ = COLOR_LAYOUTS[nd.ColorMode.RGB1]
    shape3, dims3 = COLOR_LAYOUTS[nd.ColorMode.RGB3]
    nt = nd.new_ntndarray(make_image(np.uint8, shape1), color_mode=nd.ColorMode.RGB1,
                          attributes={"Other": 5})
    image = make_image(np.uint16, shape3)
    nd.set_image(nt, image, nd.ColorMode.RGB3)
    assert dimension_sizes(nt) == dims3
    assert nd.color_mode_of(nt) == nd.ColorMode.RGB3
    names = [a["name"] for a in nt["attribute"]]
    assert names.count("ColorMode") == 1
    assert nd.attributes_of(nt)["Other"] == 5
    assert_bits_equal(nd.image_view(nt), image)


def test_set_image_checks_color_shape():
    nt = nd.new_ntndarray(np.zeros((NY, NX), np.uint8))
    with pytest.raises(FrameFormatError):
        nd.set_image(nt, np.zeros((NY, NX, 4), np.uint8), nd.ColorMode.RGB1)


# ----------------------------------------------------------- ids, time, attributes


def test_unique_id_and_timestamps():
    t = 1_700_000_123.987654321
    nt = nd.new_ntndarray(np.zeros((2, 3), np.uint8), unique_id=2**31 - 1, timestamp=t)
    assert nt["uniqueId"] == 2**31 - 1
    for field in ("timeStamp", "dataTimeStamp"):
        assert nt[field]["secondsPastEpoch"] == 1_700_000_123
        assert abs(nt[field]["nanoseconds"] - 987_654_321) < 1000
        assert abs(nd.timestamp_of(nt, field) - t) < 1e-6


@pytest.mark.parametrize("t", [0.0, 1.5, 12.000000001, 1_600_000_000.000001, 2_000_000_000.999999])
def test_set_timestamps_precision(t):
    nt = nd.new_ntndarray(np.zeros((1, 1), np.uint8))
    nd.set_timestamps(nt, t)
    assert abs(nd.timestamp_of(nt) - t) < 1e-6
    assert abs(nd.timestamp_of(nt, "dataTimeStamp") - t) < 1e-6
    assert 0 <= nt["timeStamp"]["nanoseconds"] < 1_000_000_000


def test_timestamp_unset_is_zero():
    nt = nd.new_ntndarray(np.zeros((1, 1), np.uint8))
    assert nd.timestamp_of(nt) == 0.0
    assert nd.timestamp_of(nt, "dataTimeStamp") == 0.0


def test_attributes_round_trip_types():
    attrs = {"i": -12, "big": 2**40, "f": 2.25, "s": "hello world", "t": True, "fa": False}
    nt = nd.new_ntndarray(np.zeros((2, 2), np.uint8), attributes=attrs)
    got = nd.attributes_of(nt)
    assert got["ColorMode"] == 0
    for name, value in attrs.items():
        assert got[name] == value
        assert type(got[name]) is type(value), name


def test_set_attributes_keeps_others_with_their_type():
    nt = nd.new_ntndarray(np.zeros((2, 2), np.uint8))
    # attributes as an areaDetector IOC would send them, with narrow types
    existing = [pva.NtAttribute("ColorMode", pva.PvInt(0)),
                pva.NtAttribute("Gain", pva.PvFloat(1.5)),
                pva.NtAttribute("Bin", pva.PvUShort(4)),
                pva.NtAttribute("Name", pva.PvString("det1"))]
    nt["attribute"] = existing
    nd.set_attributes(nt, {"Gain": 3.0, "Added": 7, "Flag": True})
    by_name = {a["name"]: a for a in nt["attribute"]}
    assert set(by_name) == {"ColorMode", "Gain", "Bin", "Name", "Added", "Flag"}
    assert by_name["Bin"]["value"][1]["value"] == pva.USHORT
    assert by_name["Name"]["value"][1]["value"] == pva.STRING
    assert by_name["ColorMode"]["value"][1]["value"] == pva.INT
    assert by_name["Gain"]["value"][1]["value"] == pva.DOUBLE  # replaced
    assert by_name["Flag"]["value"][1]["value"] == pva.BOOLEAN
    assert nd.attributes_of(nt) == {"ColorMode": 0, "Gain": 3.0, "Bin": 4, "Name": "det1",
                                    "Added": 7, "Flag": True}
    # replacing again does not duplicate
    nd.set_attributes(nt, {"Added": "x"})
    names = [a["name"] for a in nt["attribute"]]
    assert sorted(names) == sorted(set(names))
    assert nd.attributes_of(nt)["Added"] == "x"


def test_set_attributes_rejects_unsupported_values():
    nt = nd.new_ntndarray(np.zeros((2, 2), np.uint8))
    with pytest.raises(FrameFormatError):
        nd.set_attributes(nt, {"bad": [1, 2]})
    with pytest.raises(FrameFormatError):
        nd.set_attributes(nt, {"bad": None})


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_codec_round_trip(dtype):
    image = np.zeros((NY, NX), dtype)
    nt = nd.new_ntndarray(np.zeros(10, np.uint8))  # 10 "compressed" bytes
    assert nd.codec_of(nt) == ("", None)
    nd.set_codec(nt, "lz4", dtype, uncompressed_size=image.nbytes)
    name, original = nd.codec_of(nt)
    assert name == "lz4"
    assert original == np.dtype(dtype)
    assert next(iter(nt["codec"]["parameters"][0].values())) == PVDATA_SCALAR_TYPE[dtype]
    assert nt["compressedSize"] == 10
    assert nt["uncompressedSize"] == image.nbytes
    with pytest.raises(FrameFormatError, match="lz4"):
        nd.image_view(nt)
    nd.set_codec(nt, "")
    assert nd.codec_of(nt) == ("", None)
    assert nd.image_view(nt).shape == (10,)


# -------------------------------------------------------------------------- errors


def test_image_view_empty_ntndarray():
    with pytest.raises(FrameFormatError, match="no data"):
        nd.image_view(pva.NtNdArray())


def test_image_view_dimensions_inconsistent_with_data():
    nt = nd.new_ntndarray(np.zeros((NY, NX), np.uint8))
    nt["dimension"] = [{"size": NX, "offset": 0, "fullSize": NX, "binning": 1, "reverse": False},
                       {"size": NY + 1, "offset": 0, "fullSize": NY + 1, "binning": 1,
                        "reverse": False}]
    with pytest.raises(FrameFormatError, match="dimensions"):
        nd.image_view(nt)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.bool_, np.float16, "U3", object])
def test_unsupported_dtype(dtype):
    with pytest.raises(FrameFormatError, match="cannot travel"):
        nd.new_ntndarray(np.zeros((2, 2), dtype))
    nt = nd.new_ntndarray(np.zeros((2, 2), np.uint8))
    with pytest.raises(FrameFormatError):
        nd.set_image(nt, np.zeros((2, 2), dtype))


def test_value_field_for_and_tables_agree():
    for dtype in ALL_DTYPES:
        assert nd.value_field_for(dtype) == EXPECTED_FIELD[dtype]
        assert nd.DTYPE_BY_FIELD[EXPECTED_FIELD[dtype]] == np.dtype(dtype)
        assert int(nd.SCALAR_TYPE_BY_DTYPE[np.dtype(dtype)]) == PVDATA_SCALAR_TYPE[dtype]
    with pytest.raises(FrameFormatError):
        nd.value_field_for("not a dtype")


# --------------------------------------------------------------- over the network


def _serve_and_get(nt):
    name = f"pvaflowtest:ntnd:{uuid.uuid4().hex[:12]}"
    server = pva.PvaServer(name, nt)
    try:
        return pva.Channel(name).get("field()")
    finally:
        server.stop()


@pytest.mark.parametrize("dtype,mode", [
    (np.uint16, nd.ColorMode.MONO),
    (np.float64, nd.ColorMode.MONO),
    (np.int8, nd.ColorMode.RGB1),
    (np.uint64, nd.ColorMode.RGB2),
    (np.float32, nd.ColorMode.RGB3),
], ids=lambda v: getattr(v, "name", None) or np.dtype(v).name)
def test_round_trip_through_pva_server(dtype, mode):
    if mode == nd.ColorMode.MONO:
        shape, dims = (NY, NX), [NX, NY]
    else:
        shape, dims = COLOR_LAYOUTS[mode]
    image = make_image(dtype, shape)
    t = 1_650_000_000.25
    nt = nd.new_ntndarray(image, unique_id=1234, timestamp=t, color_mode=mode,
                          attributes={"Exposure": 0.5, "Label": "frame", "Ok": True})
    received = _serve_and_get(nt)
    assert dimension_sizes(received) == dims
    assert received["uniqueId"] == 1234
    assert abs(nd.timestamp_of(received) - t) < 1e-6
    assert nd.color_mode_of(received) == mode
    attrs = nd.attributes_of(received)
    assert attrs["Exposure"] == 0.5 and attrs["Label"] == "frame" and attrs["Ok"] is True
    view = nd.image_view(received)
    assert_bits_equal(view, image)
    assert np.shares_memory(view, nd.image_view(received))
    assert not view.flags.writeable


def test_compressed_frame_through_pva_server():
    nt = nd.new_ntndarray(np.arange(16, dtype=np.uint8))
    nd.set_codec(nt, "blosc", np.uint16, uncompressed_size=64)
    received = _serve_and_get(nt)
    assert nd.codec_of(received) == ("blosc", np.dtype(np.uint16))
    assert received["compressedSize"] == 16 and received["uncompressedSize"] == 64
    with pytest.raises(FrameFormatError):
        nd.image_view(received)
