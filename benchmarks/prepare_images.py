"""Benchmark: preparing a folder of mixed photos at 64 px with `prefgen prepare-images`, beside a plain PIL loop.

    nice -n 19 .venv/bin/python benchmarks/prepare_images.py                 # 100,000 images
    nice -n 19 .venv/bin/python benchmarks/prepare_images.py --n 2000 --keep

Images: N files drawn with a fixed seed from a mix of formats (JPEG, PNG, WebP, GIF, grey JPEG and PNG, RGBA
PNG) and sizes (shorter side log-uniform from 64 to 2000 px; square, landscape and portrait shapes). Their
pictures are scikit-image's photos resized to each size, so they compress as photos do. To keep generating
cheap, POOL pictures are encoded once and each file is one of them followed by a unique trailer after the
format's end marker: every file has its own sha256, so every one is decoded in full. The disk needed is
printed (and checked) before anything is written; the folder is deleted afterwards unless --keep.

Each measurement runs in a fresh subprocess, which reports its wall time and peak RSS (`VmHWM`):
`prefgen` is `prepare_images` on an empty output folder, `prefgen rerun` the same again (every image
unchanged: a hash per file), and `plain PIL` a loop doing the same work the obvious way (open, convert to
RGB, LANCZOS-resize the shorter side to 64, crop the centre, save a PNG) with no draft decoding, no
alpha compositing and no reducing gap. Results are printed and written to benchmarks/results/prepare_images.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 0
POOL = 200
SIZE = 64
MIN_SIDE, MAX_SIDE = 64, 2000
KINDS = {"jpeg": 0.5, "png": 0.15, "webp": 0.1, "gif": 0.05, "grey-jpeg": 0.05, "grey-png": 0.05, "rgba-png": 0.1}
SHAPES = {1.0: 0.4, 4 / 3: 0.2, 3 / 2: 0.1, 16 / 9: 0.1, 3 / 4: 0.1, 9 / 16: 0.1}  # width / height
MB = 2**20
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg", "motorcycle_left.png")


def pool_pictures(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """POOL (file suffix, encoded bytes) pictures of the benchmark's mix of kinds and sizes."""
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    photos = [Image.open(folder / name).convert("RGB") for name in PHOTOS]
    kinds = rng.choice(list(KINDS), size=POOL, p=list(KINDS.values()))
    ratios = rng.choice(list(SHAPES), size=POOL, p=list(SHAPES.values()))
    shorts = np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE), size=POOL)).astype(int)
    pictures = []
    for k, (kind, ratio, short) in enumerate(zip(kinds, ratios, shorts)):
        width, height = (int(short * ratio), int(short)) if ratio >= 1 else (int(short), int(short / ratio))
        image = photos[k % len(photos)].resize((width, height), Image.Resampling.BILINEAR)
        pictures.append(encode(image, str(kind)))
    return pictures


def encode(image, kind: str) -> tuple[str, bytes]:
    fmt = kind.split("-")[-1]
    if kind.startswith("grey"):
        image = image.convert("L")
    elif kind == "rgba-png":
        image = image.convert("RGBA")
        image.putalpha(image.getchannel("G"))  # a varying alpha, so compositing does real work
    buffer = io.BytesIO()
    image.save(buffer, fmt.upper(), **({"quality": 85} if fmt in ("jpeg", "webp") else {}))
    return fmt.replace("jpeg", "jpg"), buffer.getvalue()


def write_folder(root: Path, n: int) -> tuple[Path, Path, int]:
    """(images folder, catalogue, bytes on disk) of n files drawn from the pool; refuses when the disk is short."""
    rng = np.random.default_rng(SEED)
    pictures = pool_pictures(rng)
    picks = rng.integers(0, POOL, size=n)
    needed = int(sum(len(pictures[k][1]) + 32 for k in picks))
    free = shutil.disk_usage(root).free
    print(f"{n} images need {needed / MB:,.0f} MiB of disk in {root} ({free / MB:,.0f} MiB free)", flush=True)
    if needed > free * 0.9:
        sys.exit(f"error: not enough disk for {n} images in {root}; pass --n smaller or --workdir elsewhere")
    images = root / "images"
    lines = []
    for i, k in enumerate(picks):
        suffix, data = pictures[k]
        name = f"{i // 1000:03d}/{i:07d}.{suffix}"
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(data + f"prefgen-bench {i:07d}".encode())  # after the end marker: ignored by decoders
        lines.append(json.dumps({"image_id": f"img{i:07d}", "path": name}) + "\n")
    catalog = root / "images.jsonl"
    catalog.write_text("".join(lines))
    return images, catalog, needed


def plain_pil(images: Path, catalog: Path, out: Path) -> None:
    """The same work written the obvious way, one image after another."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for line in catalog.read_text().splitlines():
        row = json.loads(line)
        with Image.open(images / row["path"]) as image:
            rgb = image.convert("RGB")
        scale = SIZE / min(rgb.size)
        width, height = max(SIZE, round(rgb.width * scale)), max(SIZE, round(rgb.height * scale))
        small = rgb.resize((width, height), Image.Resampling.LANCZOS)
        left, top = (width - SIZE) // 2, (height - SIZE) // 2
        small.crop((left, top, left + SIZE, top + SIZE)).save(out / f"{row['image_id']}.png")


def worker(what: str, images: Path, catalog: Path, out: Path) -> None:
    """One measurement, run in this fresh process: prints {seconds, peak_rss_mb, counts} as JSON."""
    start = time.perf_counter()
    counts = {}
    if what == "plain":
        plain_pil(images, catalog, out)
    else:
        from prefgen.vision.prepare import prepare_images

        counts = prepare_images(images, catalog, out, SIZE, log=lambda line: print(line, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "counts": counts}))


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM where Linux has it, since ru_maxrss keeps the forking parent's peak across exec."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def measure(what: str, images: Path, catalog: Path, out: Path, n: int) -> dict:
    command = [sys.executable, __file__, "--worker", what, "--images", str(images), "--catalog", str(catalog), "--out", str(out)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result | {"images_per_s": n / result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated folder (its path is printed)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary folder goes (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "prepare_images.json")
    parser.add_argument("--worker", choices=("prefgen", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--catalog", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.images, args.catalog, args.out)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    import PIL

    root = Path(tempfile.mkdtemp(prefix="prepare-bench-", dir=args.workdir))
    try:
        start = time.perf_counter()
        images, catalog, disk = write_folder(root, args.n)
        print(f"generated in {time.perf_counter() - start:.0f} s", flush=True)
        rows = {"prefgen": measure("prefgen", images, catalog, root / "prepared", args.n),
                "prefgen rerun": measure("prefgen", images, catalog, root / "prepared", args.n),
                "plain PIL": measure("plain", images, catalog, root / "plain", args.n)}
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    result = {"n": args.n, "size": SIZE, "seed": SEED, "kinds": KINDS, "sides": [MIN_SIDE, MAX_SIDE], "disk_mb": disk / MB,
              "pillow": PIL.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':<15}{'images/s':>10}{'seconds':>10}{'peak RSS MiB':>14}")
    for name, row in rows.items():
        print(f"{name:<15}{row['images_per_s']:>10.0f}{row['seconds']:>10.1f}{row['peak_rss_mb']:>14.0f}")


if __name__ == "__main__":
    main()
