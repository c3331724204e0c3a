"""paddlecls_q.preprocess against a literal port of PaddleClas's deploy preprocessing, on real photos."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import paddleclas_reference as reference  # tests/, on sys.path under pytest's default import mode
import pytest
import yaml
from PIL import Image

from helpers import build
from paddlecls_q.config import load_inference_cls_yaml
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.preprocess import MAX_IMAGE_PIXELS, build_preprocessor, read_image

DATA = Path(__file__).parent / "data"
IMAGES = sorted((DATA / "images").glob("*.jpeg"))
CONFIGS = DATA / "configs"
REPO = Path(__file__).parent.parent
TOLERANCE = 1e-5

# Normalization that changes nothing, so that the uint8 output of resize and crop is compared exactly.
IDENTITY_TAIL = [
    {"NormalizeImage": {"scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1], "order": ""}},
    {"ToCHWImage": None},
]
RESIZE_CROP = [{"ResizeImage": {"resize_short": 256}}, {"CropImage": {"size": 224}}]
IMAGENET_NORMALIZE = {"scale": 0.00392157, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def normalize(**params: object) -> dict:
    return {"NormalizeImage": {**IMAGENET_NORMALIZE, **params}}


TO_CHW = {"ToCHWImage": None}

VARIANTS: dict[str, list[dict]] = {
    "resize_short 256": [{"ResizeImage": {"resize_short": 256}}, *IDENTITY_TAIL],
    "resize_short 225": [{"ResizeImage": {"resize_short": 225}}, *IDENTITY_TAIL],
    "size int": [{"ResizeImage": {"size": 224}}, *IDENTITY_TAIL],
    "size [w, h]": [{"ResizeImage": {"size": [160, 80]}}, *IDENTITY_TAIL],
    "resize_short wins over size": [{"ResizeImage": {"resize_short": 100, "size": [160, 80]}}, *IDENTITY_TAIL],
    **{
        f"cv2 {name}": [{"ResizeImage": {"resize_short": 256, "interpolation": name}}, *IDENTITY_TAIL]
        for name in ("nearest", "bilinear", "area", "bicubic", "lanczos")
    },
    **{
        f"pil {name}": [{"ResizeImage": {"resize_short": 256, "backend": "pil", "interpolation": name}}, *IDENTITY_TAIL]
        for name in ("nearest", "bilinear", "bicubic", "lanczos")
    },
    "pil default": [{"ResizeImage": {"resize_short": 256, "backend": "pil"}}, *IDENTITY_TAIL],
    "pil size [w, h]": [{"ResizeImage": {"size": [160, 80], "backend": "pil"}}, *IDENTITY_TAIL],
    "crop int": [*RESIZE_CROP, *IDENTITY_TAIL],
    "crop [w, h]": [{"ResizeImage": {"resize_short": 256}}, {"CropImage": {"size": [224, 160]}}, *IDENTITY_TAIL],
    "crop [w, h] of the original": [{"CropImage": {"size": [300, 200]}}, *IDENTITY_TAIL],
    "normalize scale number, order ''": [*RESIZE_CROP, normalize(order=""), TO_CHW],
    "normalize scale '1.0/255.0', order hwc": [*RESIZE_CROP, normalize(scale="1.0/255.0", order="hwc"), TO_CHW],
    "normalize order chw after ToCHW": [*RESIZE_CROP, TO_CHW, normalize(order="chw")],
    "normalize mean/std 0.5, scale '1/127.5'": [
        *RESIZE_CROP,
        normalize(scale="1/127.5", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], order=""),
        TO_CHW,
    ],
    "normalize channel_num 4, hwc": [*RESIZE_CROP, normalize(order="hwc", channel_num=4), TO_CHW],
    "normalize channel_num 4, chw": [*RESIZE_CROP, TO_CHW, normalize(order="chw", channel_num=4)],
    "normalize output_fp16, ''": [*RESIZE_CROP, normalize(order="", output_fp16=True), TO_CHW],
    "normalize output_fp16, chw": [*RESIZE_CROP, TO_CHW, normalize(order="chw", output_fp16=True)],
    "normalize before crop (unfused)": [
        {"ResizeImage": {"resize_short": 256}},
        normalize(order=""),
        {"CropImage": {"size": 224}},
        TO_CHW,
    ],
    "normalize twice, hwc": [*RESIZE_CROP, normalize(order=""), normalize(order="", scale=1), TO_CHW],
    "normalize twice, chw, fp16 and channel_num 4": [
        *RESIZE_CROP,
        TO_CHW,
        normalize(order="chw"),
        normalize(order="chw", scale=1, channel_num=4, output_fp16=True),
    ],
}




def run_reference(transform_ops: list[dict], image: np.ndarray) -> np.ndarray:
    return reference.run_operators(reference.create_operators(copy.deepcopy(transform_ops)), image)


def max_abs_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    return float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max())


@pytest.fixture(scope="module")
def photo_pixels() -> np.ndarray:
    return reference.read_image(IMAGES[0])


# ---- parity with PaddleClas ---------------------------------------------------------------------


@pytest.mark.parametrize("image_path", IMAGES, ids=[p.stem for p in IMAGES])
@pytest.mark.parametrize("variant", VARIANTS)
def test_ops_match_paddleclas(variant: str, image_path: Path) -> None:
    ours = build(VARIANTS[variant])(read_image(image_path))
    theirs = run_reference(VARIANTS[variant], reference.read_image(image_path))
    assert ours.flags.c_contiguous
    assert max_abs_difference(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("config_name", ["inference_cls.yaml", "inference_textline_orientation.yaml"])
def test_real_configs_match_paddleclas_in_a_batch(config_name: str) -> None:
    path = CONFIGS / config_name
    preprocessor = build_preprocessor(load_inference_cls_yaml(path))
    transform_ops = yaml.safe_load(path.read_text())["PreProcess"]["transform_ops"]

    ours = preprocessor.batch([read_image(p) for p in IMAGES])
    theirs = np.array([run_reference(transform_ops, reference.read_image(p)) for p in IMAGES])  # as predict_cls

    assert ours.dtype == np.float32 and ours.shape[:2] == (len(IMAGES), 3)
    assert max_abs_difference(ours, theirs) <= TOLERANCE


def test_resize_short_rounds_half_to_even_like_paddleclas() -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 125, 3), dtype=np.uint8)  # 125 * 0.5 = 62.5
    transform_ops = [{"ResizeImage": {"resize_short": 50}}, *IDENTITY_TAIL]
    ours = build(transform_ops)(image)
    assert ours.shape == (3, 50, 62)
    assert max_abs_difference(ours, run_reference(transform_ops, image)) == 0


def test_packaged_sample_image_reads_like_paddleclas() -> None:
    sample = REPO / "paddlecls_q" / "assets" / "images" / "ILSVRC2012_val_00000010.jpeg"
    np.testing.assert_array_equal(read_image(sample), reference.read_image(sample))


# ---- read_image -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image_path", IMAGES, ids=[p.stem for p in IMAGES])
def test_read_image_is_cv2_imread_as_rgb(image_path: Path) -> None:
    image = read_image(image_path)
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, reference.read_image(image_path))


def _write_grey(path: Path, bgr: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def _write_rgba(path: Path, bgr: np.ndarray) -> None:
    alpha = np.linspace(0, 255, bgr.shape[1], dtype=np.uint8)[None, :].repeat(bgr.shape[0], axis=0)
    cv2.imwrite(str(path), np.dstack([bgr, alpha]))


def _write_16_bit(path: Path, bgr: np.ndarray) -> None:
    low_bits = np.random.default_rng(0).integers(0, 256, bgr.shape, dtype=np.uint16)
    cv2.imwrite(str(path), bgr.astype(np.uint16) * 256 + low_bits)


def _write_16_bit_grey(path: Path, bgr: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("grey.png", _write_grey),
        ("grey.jpg", _write_grey),
        ("rgba.png", _write_rgba),
        ("sixteen_bit.png", _write_16_bit),
        ("sixteen_bit_grey.png", _write_16_bit_grey),
    ],
)
def test_read_image_converts_like_cv2_imread_default(tmp_path: Path, name: str, write) -> None:
    bgr = cv2.imread(str(IMAGES[0]))
    path = tmp_path / name
    write(path, bgr)

    image = read_image(path)

    assert image.shape == bgr.shape and image.dtype == np.uint8
    np.testing.assert_array_equal(image, cv2.imread(str(path))[:, :, ::-1])
    if name.startswith("grey"):
        assert (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all()
    if name == "rgba.png":  # alpha is dropped, not blended
        np.testing.assert_array_equal(image, bgr[:, :, ::-1])
    if name == "sixteen_bit.png":  # scaled to 8 bits
        assert np.abs(image.astype(int) - bgr[:, :, ::-1]).max() <= 1


def test_read_image_applies_exif_orientation_like_cv2_imread(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.open(IMAGES[0]).save(path, exif=exif.tobytes(), quality=95)

    image = read_image(path)

    assert image.shape[:2] == Image.open(IMAGES[0]).size  # rotated: (h, w) is the original's (w, h)
    np.testing.assert_array_equal(image, reference.read_image(path))


def test_read_image_handles_non_ascii_paths(tmp_path: Path) -> None:
    path = tmp_path / "chaton é 猫.jpeg"
    shutil.copy(IMAGES[0], path)
    np.testing.assert_array_equal(read_image(path), read_image(IMAGES[0]))


def test_cmyk_jpeg_preprocesses_like_the_rgb_original(tmp_path: Path) -> None:
    cmyk_path = tmp_path / "cmyk.jpg"
    Image.open(IMAGES[0]).convert("CMYK").save(cmyk_path, quality=95)
    assert Image.open(cmyk_path).mode == "CMYK"
    preprocessor = build_preprocessor(load_inference_cls_yaml(CONFIGS / "inference_cls.yaml"))

    image = read_image(cmyk_path)
    pillow_rgb = np.asarray(Image.open(cmyk_path).convert("RGB"))

    # OpenCV's CMYK conversion approximates /255 with >>8: within 2 grey levels of Pillow's exact one.
    assert np.abs(image.astype(int) - pillow_rgb).max() <= 2
    two_levels = 2 * IMAGENET_NORMALIZE["scale"] / min(IMAGENET_NORMALIZE["std"]) + TOLERANCE
    assert max_abs_difference(preprocessor(image), preprocessor(pillow_rgb)) <= two_levels
    # Against the RGB original only JPEG re-encoding differences remain (measured: mean 0.019, max 0.12).
    ours, original = preprocessor(image), preprocessor(read_image(IMAGES[0]))
    difference = np.abs(ours - original)
    assert difference.mean() < 0.03 and difference.max() < 0.2
    assert float((ours * original).sum() / np.linalg.norm(ours) / np.linalg.norm(original)) > 0.999


def test_read_image_refuses_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.jpg"
    with pytest.raises(InputError, match=r"nothing\.jpg: image not found"):
        read_image(path)


def test_read_image_refuses_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)


def test_read_image_refuses_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(InputError, match=r"empty\.jpg: empty file"):
        read_image(path)


def test_read_image_refuses_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image\n")
    with pytest.raises(InputError, match=r"notes\.jpg: not an image"):
        read_image(path)


def test_read_image_refuses_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), cv2.imread(str(IMAGES[0])))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"cut\.png: not an image"):
        read_image(path)


@pytest.fixture(scope="module")
def ten_thousand_square_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 M pixels in ~12 kB
    return path


def test_read_image_refuses_too_many_pixels(ten_thousand_square_png: Path) -> None:
    assert 10_000 * 10_000 > MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match=r"large\.png: image too large: 10000x10000 = 100,000,000 pixels"):
        read_image(ten_thousand_square_png)


def test_read_image_refuses_large_image_before_decoding_it(ten_thousand_square_png: Path) -> None:
    """Decoding it would take >300 MB (and ~1 s); the refusal must come from the header alone."""
    script = (
        "import resource, sys\n"
        "from paddlecls_q.preprocess import read_image\n"
        "from paddlecls_q.errors import InputError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_image(sys.argv[1])\n"
        "except InputError:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(ten_thousand_square_png)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 50_000  # kB


def test_read_image_refuses_pillow_decompression_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 10_000)).save(path)  # above Pillow's own 179 M-pixel limit
    with pytest.raises(InputError, match=r"bomb\.png: image too large"):
        read_image(path)


# ---- config and input errors ----------------------------------------------------------------------


def test_unsupported_op_in_yaml_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "inference_cls.yaml").read_text())
    config["PreProcess"]["transform_ops"].insert(1, {"RandFlipImage": {"flip_code": 1}})
    path = tmp_path / "inference_cls.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="RandFlipImage"):
        build_preprocessor(load_inference_cls_yaml(path))


@pytest.mark.parametrize(
    ("transform_ops", "message"),
    [
        ([{"ResizeImage": {"resize_short": 256, "interpolation": "random"}}, *IDENTITY_TAIL], "'random'"),
        ([{"ResizeImage": {"resize_short": 256, "backend": "pil", "interpolation": "area"}}, *IDENTITY_TAIL], "area"),
        ([*RESIZE_CROP, normalize(order="chw"), TO_CHW], "put ToCHWImage before it"),
        ([*RESIZE_CROP, TO_CHW, normalize(order="")], "put it before ToCHWImage"),
        ([*RESIZE_CROP, normalize(order="")], "add ToCHWImage"),
        ([*RESIZE_CROP, TO_CHW], "no NormalizeImage"),
        ([TO_CHW, *RESIZE_CROP, normalize(order="chw")], "must come before ToCHWImage"),
        (
            [
                {"ResizeImage": {"resize_short": 256}},
                normalize(order=""),
                {"ResizeImage": {"size": 224, "backend": "pil"}},
                TO_CHW,
            ],
            "uint8",
        ),
        ([*RESIZE_CROP, normalize(order="", channel_num=4), normalize(order=""), TO_CHW], "4-channel"),
    ],
)
def test_unusable_op_sequences_are_config_errors(transform_ops: list[dict], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(transform_ops)


def test_crop_larger_than_image_is_an_input_error_naming_sizes() -> None:
    preprocessor = build([{"CropImage": {"size": [224, 200]}}, *IDENTITY_TAIL])
    with pytest.raises(InputError, match=r"224x200 .* larger than the 300x100 image"):
        preprocessor(np.zeros((100, 300, 3), np.uint8))


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32), "a.jpg"],
    ids=["grey 2-D", "4 channels", "float", "a path"],
)
def test_preprocessor_refuses_what_read_image_does_not_return(image: object) -> None:
    with pytest.raises(InputError, match="HxWx3 uint8"):
        build(VARIANTS["crop int"])(image)


def test_batch_needs_images_of_one_output_size(photo_pixels: np.ndarray) -> None:
    preprocessor = build([{"ResizeImage": {"resize_short": 64}}, *IDENTITY_TAIL])
    with pytest.raises(InputError, match="different shapes"):
        preprocessor.batch([photo_pixels, photo_pixels[:, :200]])
    with pytest.raises(InputError, match="no images"):
        preprocessor.batch([])


def test_batch_stacks_single_image_outputs(photo_pixels: np.ndarray) -> None:
    preprocessor = build_preprocessor(load_inference_cls_yaml(CONFIGS / "inference_cls.yaml"))
    batch = preprocessor.batch([photo_pixels, photo_pixels[::-1]])
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], preprocessor(np.ascontiguousarray(photo_pixels[::-1])))


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 300_001])
def test_read_bytes_reads_every_size_whole(tmp_path, size):
    from paddlecls_q.preprocess.image_io import read_file_bytes as _read_bytes

    path = tmp_path / "blob"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    assert _read_bytes(path) == path.read_bytes()


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "area", "bicubic", "lanczos"])
def test_fast_plan_takes_a_grey_plane_as_its_rgb_image(interpolation):
    from paddlecls_q.preprocess import compile_plan

    ops = [
        {"ResizeImage": {"resize_short": 256, "interpolation": interpolation}},
        {"CropImage": {"size": 224}},
        {"NormalizeImage": {"scale": 0.00392157, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "order": ""}},
        {"ToCHWImage": None},
    ]
    reference = build(ops)
    fast = compile_plan(reference)
    rng = np.random.default_rng(7)
    for height, width in [(375, 500), (129, 657), (465, 422), (256, 256), (300, 1000)]:
        grey = cv2.GaussianBlur(rng.integers(0, 256, (height, width), dtype=np.uint8), (5, 5), 2)
        expected = reference(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
        assert np.array_equal(fast(grey), expected)
        out = np.empty_like(expected)
        assert fast(grey, out=out) is out and np.array_equal(out, expected)


@pytest.mark.parametrize(
    "resize, crop",
    [({"size": 32}, None), ({"resize_short": 40}, 32), ({"resize_short": 36, "interpolation": "nearest"}, 28)],
)
def test_fill_batch_gives_each_grey_image_its_own_tensor(resize, crop):
    """fill_batch (one table lookup per channel for the whole batch) writes what one call per image writes."""
    from paddlecls_q.preprocess import compile_plan

    ops = [{"ResizeImage": resize}, *([{"CropImage": {"size": crop}}] if crop else [])]
    ops += [{"NormalizeImage": {"scale": 0.00392157, "mean": [0.5, 0.4, 0.3], "std": [0.5, 0.6, 0.7], "order": ""}}]
    reference = build([*ops, {"ToCHWImage": None}])
    fast = compile_plan(reference)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (28, 44), dtype=np.uint8) for _ in range(7)]
    expected = np.stack([reference(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)) for image in images])
    out = np.full((9, *expected.shape[1:]), -7.0, np.float32)
    assert not fast.fill_batch(images, out)  # nothing bound on this thread yet: the caller goes image by image
    fast(images[0], out=out[0])
    out[0] = -7.0
    assert fast.fill_batch(images, out)
    assert np.array_equal(out[:7], expected) and (out[7:] == -7.0).all()
    # Images of another size, or RGB ones, are not the bound steps' to take: nothing written.
    assert not fast.fill_batch([images[0], images[1][:, :40]], out)
    assert not fast.fill_batch([cv2.cvtColor(images[0], cv2.COLOR_GRAY2RGB)], out)
    assert not fast.fill_batch(images * 2, out)  # more images than rows
    assert np.array_equal(out[:7], expected)


def test_both_implementations_honour_one_interface() -> None:
    """build_preprocessor returns a FastPreprocessor or a Preprocessor; callers use only ImagePreprocessor."""
    from paddlecls_q.preprocess import FastPreprocessor, Preprocessor, reference_preprocessor

    config = load_inference_cls_yaml(CONFIGS / "inference_cls.yaml")
    fast, reference = build_preprocessor(config), build_preprocessor(config, fast=False)
    assert isinstance(fast, FastPreprocessor) and isinstance(reference, Preprocessor)
    assert type(reference_preprocessor(config)) is Preprocessor
    image = read_image(IMAGES[0])
    expected = reference(image)
    for preprocessor in (fast, reference):
        out = np.full(expected.shape, np.nan, np.float32)
        assert preprocessor(image, out=out) is out
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(preprocessor.batch([image, image])[1], expected)
        assert preprocessor.transform_ops == reference.transform_ops and preprocessor.output_dtype == np.float32
    assert fast.reads_grey and not reference.reads_grey
    assert not reference.fill_batch([image], np.empty((1, *expected.shape), np.float32))
