"""Image preparation: photos of every mode and format as size x size RGB, bad files rejected with a reason, reruns incremental."""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage
import sklearn
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from typer.testing import CliRunner

from prefgen.cli import app
from prefgen.vision import prepare as prep
from prefgen.vision.prepare import prepare_bytes, prepare_images

SIZE = 16
MAX = 10_000_000
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
KNOWN = set(prep.REASONS)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def prepared(data: bytes, size: int = SIZE) -> np.ndarray:
    pixels, reason = prepare_bytes(data, size, MAX)
    assert reason == "" and pixels is not None, reason
    assert pixels.shape == (3, size, size) and pixels.dtype == np.uint8
    return pixels


def photo(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def packaged_files() -> list[str]:
    """Every file of scikit-image's data folder (photos, and code and arrays) and scikit-learn's two sample JPEGs."""
    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    files = [path for path in glob.glob(os.path.join(folder, "*")) if os.path.isfile(path)]
    return sorted(files) + sorted(glob.glob(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "*.jpg")))


def opens(path: str) -> bool:
    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - whatever Pillow cannot open must be rejected, not prepared
        return False


def test_every_packaged_photo_is_prepared_and_every_other_file_rejected_with_a_reason():
    files = packaged_files()
    photos = [path for path in files if opens(path)]
    assert len(photos) >= 29 and len(files) > len(photos)  # photos of mixed modes, and .npy/.py/.txt files
    for path in files:
        with open(path, "rb") as handle:
            pixels, reason = prepare_bytes(handle.read(), 64, MAX)
        if path in photos:
            assert reason == "" and pixels.shape == (3, 64, 64) and pixels.dtype == np.uint8, path
        else:
            assert pixels is None and reason in KNOWN, (path, reason)


def test_a_wide_photo_keeps_its_centre_square():
    image = Image.new("RGB", (90, 30), RED)
    image.paste(BLUE, (30, 0, 60, 30))  # the middle third: all the centre crop keeps
    inside = prepared(encode(image, "PNG")).astype(int)[:, :, 2:-2]  # the filter's taps at the edges reach past the crop
    assert np.all(np.abs(inside - np.array(BLUE)[:, None, None]) <= 1)


def test_a_small_tall_image_is_scaled_up_on_its_shorter_side():
    image = Image.new("RGB", (4, 12), RED)
    image.paste(BLUE, (0, 0, 4, 2))  # the top band falls outside the centre square
    inside = prepared(encode(image, "PNG"), size=32).astype(int)[:, 4:-4]  # the filter's taps at the edges reach past the crop
    assert np.all(np.abs(inside - np.array(RED)[:, None, None]) <= 1)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_come_out_white(mode):
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 20, 10))  # opaque red top half, transparent black bottom half
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        image = image.convert("P")  # Pillow keeps the transparent entry as the palette's transparency
        assert image.has_transparency_data
    pixels = prepared(encode(image, "PNG"))
    assert pixels[:, -4:, :].min() == 255  # transparent black became white, not black
    assert pixels[:, :4, :].max(axis=0).min() > 50 and pixels[:, :4, :].min() < 100  # the opaque half keeps its colour


@pytest.mark.parametrize("fmt, options", [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}),
                                          ("BMP", {}), ("GIF", {})])
def test_every_format_gives_the_same_picture(fmt, options):
    image = Image.new("RGB", (40, 40), RED)
    image.paste(BLUE, (0, 20, 40, 40))
    pixels = prepared(encode(image, fmt, **options)).astype(int)
    assert abs(pixels[0, 2, 8] - 255) < 40 and abs(pixels[2, -2, 8] - 255) < 40 and pixels[0, -2, 8] < 40


@pytest.mark.parametrize("mode", ["L", "1", "CMYK"])
def test_grey_binary_and_cmyk_images_become_rgb(mode):
    image = Image.new("RGB", (24, 24), WHITE)
    image.paste((0, 0, 0), (0, 0, 24, 12))
    data = encode(image.convert(mode), "JPEG" if mode == "CMYK" else "PNG")
    pixels = prepared(data).astype(int)
    assert pixels[:, 1, :].max() < 60 and pixels[:, -2, :].min() > 195  # black top, white bottom in all three channels


def test_sixteen_bit_grey_is_scaled_by_its_format_white():
    values = np.full((20, 20), 65535, dtype=np.uint16)
    values[:10] = 32768
    image = Image.fromarray(values)
    assert Image.open(io.BytesIO(encode(image, "PNG"))).mode.startswith("I;16")
    pixels = prepared(encode(image, "PNG")).astype(int)
    assert abs(pixels[:, 1, :] - 128).max() <= 1 and pixels[:, -2, :].min() == 255


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (20, 20), colour) for colour in (RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixels = prepared(data).astype(int)
    assert pixels[0].min() > 200 and pixels[2].max() < 50


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 40), WHITE)
    image.paste(RED, (0, 0, 40, 10))  # stored with a red top band
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the top band ends on the right
    pixels = prepared(encode(image, "JPEG", exif=exif.tobytes())).astype(int)
    right, left = pixels[:, :, -2], pixels[:, :, 1]
    assert right[0].min() > 200 and right[1].max() < 60 and left.min() > 200


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds none: decoding it can only fail."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_rejected_from_its_header_without_decoding():
    bomb = png_header(20000, 20000)
    assert prepare_bytes(png_header(200, 100), SIZE, MAX) == (None, "undecodable_image")  # what decoding one says
    assert prepare_bytes(bomb, SIZE, 100_000_000) == (None, "too_many_pixels")
    assert prepare_bytes(bomb, SIZE, 10**12) == (None, "too_many_pixels")  # Pillow's own limit rejects it too
    assert prepare_bytes(encode(photo(), "PNG"), SIZE, 48 * 40 - 1)[1] == "too_many_pixels"


def test_truncated_empty_and_non_image_bytes_have_their_reasons():
    png = encode(photo(), "PNG")
    assert prepare_bytes(png[: len(png) // 2], SIZE, MAX) == (None, "truncated_image")
    assert prepare_bytes(b"", SIZE, MAX) == (None, "empty_file")
    assert prepare_bytes(b"a caption, not a photo\n", SIZE, MAX) == (None, "not_an_image")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert prepare_bytes(eps, SIZE, MAX) == (None, "not_an_image")  # never handed to Ghostscript


def catalogue_folder(root: Path) -> tuple[Path, Path]:
    """(images folder, catalogue) with three good photos and one file or row for every rejection."""
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    for k, name in enumerate(("a.jpg", "sub/b.png", "c.webp")):
        photo(40 + 8 * k, 30, seed=k).save(images / name)
    png = encode(photo(seed=9), "PNG")
    (images / "cut.png").write_bytes(png[: len(png) // 2])
    (images / "empty.jpg").write_bytes(b"")
    (images / "notes.txt").write_text("not an image")
    (root / "outside.png").write_bytes(encode(photo(seed=8), "PNG"))
    (images / "link.png").symlink_to(root / "outside.png")
    rows = [{"image_id": "a", "path": "a.jpg"}, {"image_id": 2, "path": "sub/b.png", "caption": "b"},
            {"image_id": "c", "path": "c.webp", "owner_id": "u1"}, {"image_id": "cut", "path": "cut.png"},
            {"image_id": "empty", "path": "empty.jpg"}, {"image_id": "txt", "path": "notes.txt"},
            {"image_id": "gone", "path": "gone.png"}, {"image_id": "up", "path": "../outside.png"},
            {"image_id": "abs", "path": str(root / "outside.png")}, {"image_id": "link", "path": "link.png"},
            {"image_id": "nopix", "path": ""}, {"image_id": "a", "path": "c.webp"}, {"image_id": "typed", "path": 7},
            {"image_id": "long", "path": "a.jpg", "caption": "x" * 2**20}]  # longer than ingest's line limit
    catalog = root / "images.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{not json\n")
    return images, catalog


def test_each_bad_row_is_rejected_with_its_reason_and_every_good_photo_prepared(tmp_path):
    images, catalog = catalogue_folder(tmp_path)
    counts = prepare_images(images, catalog, tmp_path / "out", SIZE, log=lambda line: None)
    assert counts["read"] == 15 and counts["prepared"] == 3 and counts["unchanged"] == 0 and counts["rejected"] == 12
    assert counts["reasons"] == {"truncated_image": 1, "empty_file": 1, "not_an_image": 1, "missing_file": 1,
                                 "bad_path": 3, "no_path": 1, "duplicate_id": 1, "bad_row": 3}
    manifest = pq.read_table(tmp_path / "out" / prep.MANIFEST).to_pylist()
    by_id = {row["image_id"]: row for row in manifest if row["reason"] != "duplicate_id"}
    assert {by_id[key]["reason"] for key in ("up", "abs", "link")} == {"bad_path"}
    for key in ("a", "2", "c"):
        path = tmp_path / "out" / by_id[key]["prepared"]
        assert by_id[key]["reason"] == "" and Image.open(path).size == (SIZE, SIZE) and by_id[key]["sha256"] in path.name


def files_and_mtimes(out: Path) -> dict[str, int]:
    return {str(path.relative_to(out)): path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}


def test_a_rerun_is_incremental_and_a_new_size_redoes_everything(tmp_path):
    images, catalog = catalogue_folder(tmp_path)
    out, quiet = tmp_path / "out", (lambda line: None)
    prepare_images(images, catalog, out, SIZE, log=quiet)
    before = {name: mtime for name, mtime in files_and_mtimes(out).items() if name.startswith(prep.IMAGES)}
    again = prepare_images(images, catalog, out, SIZE, log=quiet)
    assert (again["prepared"], again["unchanged"], again["rejected"]) == (0, 3, 12)
    assert {name: mtime for name, mtime in files_and_mtimes(out).items() if name.startswith(prep.IMAGES)} == before
    photo(40, 30, seed=5).save(images / "a.jpg")
    changed = prepare_images(images, catalog, out, SIZE, log=quiet)
    assert (changed["prepared"], changed["unchanged"], changed["removed"]) == (1, 2, 1)  # a.jpg's old image went
    other = prepare_images(images, catalog, out, SIZE * 2, log=quiet)
    assert (other["prepared"], other["unchanged"], other["removed"]) == (3, 0, 3)
    assert not [name for name in files_and_mtimes(out) if name.endswith(".tmp")]
    assert len([name for name in files_and_mtimes(out) if name.endswith(".png")]) == 3


def test_a_new_preparation_version_redoes_everything(tmp_path, monkeypatch):
    images, catalog = catalogue_folder(tmp_path)
    prepare_images(images, catalog, tmp_path / "out", SIZE, log=lambda line: None)
    monkeypatch.setattr(prep, "PREPARATION_VERSION", prep.PREPARATION_VERSION + 1)
    assert prepare_images(images, catalog, tmp_path / "out", SIZE, log=lambda line: None)["prepared"] == 3


def test_a_parquet_or_gzipped_catalogue_reads_like_the_jsonl(tmp_path):
    import pyarrow as pa

    images, catalog = catalogue_folder(tmp_path)
    rows = [json.loads(line) for line in catalog.read_text().splitlines()[:7]]
    table = pa.table({"image_id": [str(row["image_id"]) for row in rows], "path": [row["path"] for row in rows]})
    pq.write_table(table, tmp_path / "images.parquet")
    (tmp_path / "images.jsonl.gz").write_bytes(gzip.compress(catalog.read_bytes()))
    from_parquet = prepare_images(images, tmp_path / "images.parquet", tmp_path / "p", SIZE, log=lambda line: None)
    from_gzip = prepare_images(images, tmp_path / "images.jsonl.gz", tmp_path / "g", SIZE, log=lambda line: None)
    assert (from_parquet["read"], from_parquet["prepared"], from_parquet["rejected"]) == (7, 3, 4)
    assert from_gzip["read"] == 15 and from_gzip["prepared"] == 3


def test_progress_is_logged_while_the_run_goes(tmp_path):
    images, catalog = catalogue_folder(tmp_path)
    lines: list[str] = []
    prepare_images(images, catalog, tmp_path / "out", SIZE, log=lines.append, progress_s=0.0)
    assert len(lines) == 16 and lines[0].startswith("prepare_images: 1/15 rows") and "15/15" in lines[-1]


def test_the_command_prints_its_counts_last_and_fails_in_one_line_on_a_missing_catalogue(tmp_path):
    images, catalog = catalogue_folder(tmp_path)
    args = ["prepare-images", "--images", str(images), "--out", str(tmp_path / "out"), "--size", str(SIZE)]
    result = CliRunner().invoke(app, [*args, "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"read", "prepared", "unchanged", "rejected", "reasons"} <= set(counts) and counts["prepared"] == 3
    missing = CliRunner().invoke(app, [*args, "--catalog", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert missing.stderr.strip().splitlines() == [f"error: catalogue not found: {tmp_path / 'nope.jsonl'}"]
    (tmp_path / "images.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")
    corrupt = CliRunner().invoke(app, [*args, "--catalog", str(tmp_path / "images.jsonl.gz")])
    assert corrupt.exit_code == 2 and corrupt.stderr.startswith(f"error: catalogue {tmp_path / 'images.jsonl.gz'} could not be read")
    half = CliRunner().invoke(app, ["prepare-images", "--images", str(images), "--size", str(SIZE)])
    assert half.exit_code == 2 and half.stderr.strip() == "error: a prepare-images run on a catalogue needs --catalog, --out too"
    mixed = CliRunner().invoke(app, [*args, "--catalog", str(catalog), "--tables", str(tmp_path)])
    assert mixed.exit_code == 2 and mixed.stderr.strip().startswith("error: give either the stage's paths (--tables, --photos, --prepared)")


SEEDS = [encode(photo(12, 9), "PNG"), encode(photo(12, 9), "JPEG"), encode(photo(9, 12), "GIF")]


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=512),
                 st.tuples(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
                           st.integers(0, 10**6))))
def test_any_bytes_give_pixels_of_the_right_shape_or_a_known_reason(case):
    if isinstance(case, bytes):
        data = case
    else:
        seed, edits, cut = case
        mutable = bytearray(seed)
        for position, value in edits:
            mutable[position % len(mutable)] = value
        data = bytes(mutable[: max(1, cut % (len(mutable) + 1))])
    pixels, reason = prepare_bytes(data, 8, 1_000_000)
    if pixels is None:
        assert reason in KNOWN
    else:
        assert reason == "" and pixels.shape == (3, 8, 8) and pixels.dtype == np.uint8


def test_a_fifo_and_a_link_loop_are_rejected_without_blocking(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    os.mkfifo(images / "pipe.png")  # opening it would wait forever for a writer
    (images / "loop.png").symlink_to("loop.png")
    photo().save(images / "ok.png")
    catalog = tmp_path / "images.jsonl"
    catalog.write_text("".join(json.dumps({"image_id": name, "path": f"{name}.png"}) + "\n" for name in ("pipe", "loop", "ok")))
    counts = prepare_images(images, catalog, tmp_path / "out", SIZE, log=lambda line: None)
    assert counts["prepared"] == 1 and counts["reasons"] == {"unreadable_file": 2}


def test_the_data_contract_documents_every_reason():
    text = (Path(__file__).resolve().parents[2] / "docs" / "DATA.md").read_text()
    section = text.split("## Preparing images", 1)[1].split("\n## ", 1)[0]
    documented = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    assert documented == set(prep.REASONS)
