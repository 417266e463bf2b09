"""The one pixel rule (core/pixels.py): every reader converts 16-bit, float and bool images the same way."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from textsam_eus.core.pixels import IMAGE_EXTENSIONS, FrameError, to_rgb_uint8, to_uint8


def test_uint8_is_unchanged_and_bool_is_0_or_255():
    a = np.array([[0, 7, 255]], np.uint8)
    assert to_uint8(a) is a
    assert to_uint8(np.array([[False, True]])).tolist() == [[0, 255]]


def test_16_bit_holding_8_bit_content_is_kept():
    a = np.array([[0, 17, 128, 255]], np.uint16)
    assert to_uint8(a).tolist() == [[0, 17, 128, 255]]


def test_16_bit_content_is_divided_by_257():
    a = np.array([[0, 65535, 257 * 10, 257 * 100 + 100, 256]], np.uint16)
    assert to_uint8(a).tolist() == [[0, 255, 10, 100, 1]]


def test_no_per_image_stretch():
    # a dim 16-bit frame stays dim: 4095 (12-bit white) -> 16, not 255
    assert to_uint8(np.array([[0, 4095]], np.uint16)).tolist() == [[0, 16]]


def test_other_integer_types_use_their_full_range_and_clip_negatives():
    assert to_uint8(np.array([[0, 100]], np.int16)).tolist() == [[0, 100]]  # 8-bit content
    assert to_uint8(np.array([[-5, 32767, 300]], np.int16)).tolist() == [[0, 255, 2]]
    assert to_uint8(np.array([[-5, 100]], np.int16)).tolist() == [[0, 1]]  # outside 0..255: the full range


def test_float_in_0_1_is_scaled_by_255():
    assert to_uint8(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)).tolist() == [[0, 64, 128, 255]]
    assert to_uint8(np.array([[-0.5, 1.0]], np.float64)).tolist() == [[0, 255]]  # negative clips to 0


def test_float_above_1_is_0_255_and_clipped():
    assert to_uint8(np.array([[0.0, 100.4, 254.6, 255.0, 300.0, -3.0]], np.float32)).tolist() == \
        [[0, 100, 255, 255, 255, 0]]


def test_non_finite_values_become_0_with_a_warning():
    a = np.array([[np.nan, np.inf, -np.inf, 0.5]], np.float32)
    with pytest.warns(RuntimeWarning, match="3 pixel values are NaN or infinite"):
        out = to_uint8(a)
    assert out.tolist() == [[0, 0, 0, 128]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_uint8(np.array([[0.5]], np.float32))  # finite: no warning


def test_unsupported_dtype_is_a_frame_error():
    with pytest.raises(FrameError, match="unsupported pixel type complex"):
        to_uint8(np.zeros((2, 2), np.complex64))


def test_channels_and_colour_order():
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    assert tuple(to_rgb_uint8(bgr, "bgr")[0, 0]) == (0, 0, 200)
    assert tuple(to_rgb_uint8(bgr, "rgb")[0, 0]) == (200, 0, 0)
    bgra = np.concatenate([bgr, np.full((4, 5, 1), 9, np.uint8)], axis=2)
    assert to_rgb_uint8(bgra, "bgr").shape == (4, 5, 3) and tuple(to_rgb_uint8(bgra, "bgr")[0, 0]) == (0, 0, 200)
    gray = np.full((4, 5), 70, np.uint16)
    for g in (gray, gray[..., None], np.stack([gray, np.full_like(gray, 65535)], axis=2)):  # + alpha
        out = to_rgb_uint8(g, "bgr")
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out.flags.c_contiguous and (out == 70).all()
    with pytest.raises(FrameError, match="unsupported image shape"):
        to_rgb_uint8(np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(FrameError, match="color_order"):
        to_rgb_uint8(bgr, "hsv")


def test_model_input_refuses_other_types_and_names_the_rule():
    from textsam_eus.model.transforms import to_rgb

    with pytest.raises(FrameError, match="to_uint8"):
        to_rgb(np.zeros((16, 16), np.uint16))


@pytest.mark.parametrize("content, expect", [(200, 200), (200 * 257, 200)], ids=["8-bit content", "16-bit"])
def test_16_bit_tiff_folder_streams_and_trains_the_same(tmp_path, content, expect):
    """A folder of 16-bit TIFFs: the stream's image-folder source and the training reader give the same pixels."""
    from textsam_eus.stream.sources import ImageFolderSource
    from textsam_eus.train.readers import Sample, load_pair

    folder = tmp_path / "tiffs"
    folder.mkdir()
    img = np.zeros((24, 32), np.uint16)
    img[4:20, 6:26] = content
    img[0, 0] = content // 2
    for i in range(2):
        assert cv2.imwrite(str(folder / f"f{i}.tif"), img)
    assert cv2.imread(str(folder / "f0.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with ImageFolderSource(folder) as src:
        frames = list(src)
    assert len(frames) == 2
    streamed = frames[0].image
    trained, _ = load_pair(Sample(folder / "f0.tif", None, "x"))
    np.testing.assert_array_equal(streamed, trained)
    assert streamed.shape == (24, 32, 3) and streamed[10, 10].tolist() == [expect] * 3  # not nearly black
    assert streamed[0, 0, 0] == expect // 2 and streamed[1, 1, 0] == 0


def test_one_list_of_image_extensions():
    from textsam_eus.stream import base
    from textsam_eus.train import readers

    assert base.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS and readers.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert ".tif" in IMAGE_EXTENSIONS and all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
