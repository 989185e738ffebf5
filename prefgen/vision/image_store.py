"""The image store: each split's images as uint8 shards that trainers stream from, never holding a split in memory.

A store folder holds

    manifest.json               size, shard_rows, images per split, skipped images by reason, digests
    index.parquet               image_id, split, shard, row, caption, sha256 of the source file
    shards/<split>-<k>.npy      uint8 (rows, 3, size, size); every shard of a split has shard_rows rows but its last

A split's images are sorted by id, as `read_split` returns them: the split's i-th image is row i % shard_rows of
shard i // shard_rows. Shards are plain `.npy`, so any reader can memory-map them (`np.load(path, mmap_mode="r")`);
`ShardDataset` reads its rows with positional reads instead, because the pages a memory map touches stay in the
process's resident set, and an epoch touches every page of the split. A store is written into a temporary folder
and renamed into place, so a reader sees a whole store or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from prefgen.checkpoint import replace_folder
from prefgen.vision.pixels import read_pixels, with_pixels

FORMAT = 2  # bump when the layout changes: an older store is then an error that asks for a rewrite
MANIFEST, INDEX, SHARDS = "manifest.json", "index.parquet", "shards"
TRAINING_SPLITS = ("train", "val")  # cold images stand in for new ones: no trainer's store holds them unless asked
SHARD_BYTES = 64 * 2**20  # the default shard size: the writer buffers one shard, whatever the image size
INDEX_SCHEMA = {"image_id": pl.String, "split": pl.String, "shard": pl.Int64, "row": pl.Int64, "caption": pl.String,
                "sha256": pl.String}
INDEX_COLUMNS = tuple(INDEX_SCHEMA)
INDEX_BATCH = 8192  # index rows checked at a time: opening a store holds no memory per image
DIGESTED = ("format", "size", "shard_rows", "splits", "counts", "index_digest", "shards")  # all but `skipped`


class StoreError(ValueError):
    """A store (or a latent store) is missing, corrupt or not the one asked for; the message names what and where."""


def default_shard_rows(row_shape: tuple[int, ...], dtype: np.dtype | type) -> int:
    return max(1, SHARD_BYTES // (int(np.prod(row_shape)) * np.dtype(dtype).itemsize))


class ShardWriter:
    """Rows of one array appended into `.npy` shards of `shard_rows` rows each, buffering one shard.

    Args:
        folder: where the shards go (created).
        prefix: shard names are `<prefix>-<k:05d>.npy`.
        shard_rows: rows per shard (the last one may have fewer).
        row_shape: the shape of one row, e.g. (3, size, size).
        dtype: the rows' dtype.
    """

    def __init__(self, folder: Path, prefix: str, shard_rows: int, row_shape: tuple[int, ...], dtype: np.dtype | type):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.prefix, self.shard_rows = folder, prefix, shard_rows
        self._buffer = np.empty((shard_rows, *row_shape), dtype=dtype)
        self._filled, self.shards = 0, []  # shards: [{"file", "rows", "sha256"}] of the shards written so far

    def add(self, row: np.ndarray) -> tuple[int, int]:
        """Append one row; returns its (shard, row) position."""
        if row.shape != self._buffer.shape[1:]:
            raise StoreError(f"a row of shape {row.shape} cannot go into shards of rows {self._buffer.shape[1:]}")
        where = (len(self.shards), self._filled)
        self._buffer[self._filled] = row
        self._filled += 1
        if self._filled == self.shard_rows:
            self._flush()
        return where

    def close(self) -> list[dict[str, Any]]:
        """Write the last, partial shard; returns every shard's file name, row count and data digest."""
        if self._filled:
            self._flush()
        self._buffer = self._buffer[:0]
        return self.shards

    def _flush(self) -> None:
        data = self._buffer[: self._filled]
        name = f"{self.prefix}-{len(self.shards):05d}.npy"
        np.save(self.folder / name, data)
        self.shards.append({"file": name, "rows": self._filled, "sha256": hashlib.sha256(data.data).hexdigest()})
        self._filled = 0


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a `.npy` file, read from its header alone."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            offset = handle.tell()
    except FileNotFoundError as err:
        raise StoreError(f"{path}: shard missing") from err
    except (OSError, ValueError, SyntaxError, tokenize.TokenError) as err:  # the header is parsed as a Python literal
        raise StoreError(f"{path}: not a readable .npy shard ({err})") from err
    if fortran_order:
        raise StoreError(f"{path}: a Fortran-ordered shard; the store writes C order")
    return shape, dtype, offset


class ShardDataset(Dataset):
    """The rows of a list of `.npy` shards as `(tensor, index)` items, read one row at a time.

    Each item is a fresh tensor of `row_shape` read with one positional read, so memory stays at a batch
    whatever the number of rows; files are opened on first use in each process (DataLoader workers included).
    `index` is the row's position in the split, the key to any per-image array a trainer keeps beside it.

    Args:
        shards: (path, data offset, rows) of every shard, in order; all but the last hold `shard_rows` rows.
        shard_rows: rows per full shard.
        row_shape: shape of one row.
        dtype: the rows' dtype.
        digest: what the rows are (the store's digest and the split), for resume keys and latent caches.
    """

    def __init__(self, shards: list[tuple[Path, int, int]], shard_rows: int, row_shape: tuple[int, ...],
                 dtype: np.dtype | type, digest: str):
        self.shards, self.shard_rows, self.row_shape = shards, shard_rows, tuple(row_shape)
        self.dtype, self.digest = np.dtype(dtype), digest
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._length = sum(rows for _, _, rows in shards)
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = int(index)
        if not 0 <= index < self._length:
            raise IndexError(f"row {index} of a dataset of {self._length} rows")
        shard, row = divmod(index, self.shard_rows)
        path, offset, _ = self.shards[shard]
        out = np.empty(self.row_shape, dtype=self.dtype)
        if os.preadv(self._fd(shard), [out], offset + row * self.row_bytes) != self.row_bytes:
            raise StoreError(f"{path}: truncated at row {row}; rewrite the store")
        return torch.from_numpy(out), index

    def _fd(self, shard: int) -> int:
        if shard not in self._fds:
            self._fds[shard] = os.open(self.shards[shard][0], os.O_RDONLY)
        return self._fds[shard]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fds": {}}  # descriptors are per process: a spawned worker opens its own

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)


def checked_shards(folder: Path, shards: list[dict[str, Any]], shard_rows: int, row_shape: tuple[int, ...],
                   dtype: np.dtype | type) -> list[tuple[Path, int, int]]:
    """(path, data offset, rows) of a manifest's shards, each checked against its header and its file's length."""
    out = []
    for k, shard in enumerate(shards):
        path, rows = folder / shard["file"], int(shard["rows"])
        if rows > shard_rows or (rows < shard_rows and k < len(shards) - 1):
            raise StoreError(f"{path}: {rows} rows listed; every shard but the last holds {shard_rows}")
        shape, found_dtype, offset = npy_layout(path)
        if shape != (rows, *row_shape) or found_dtype != np.dtype(dtype):
            raise StoreError(f"{path}: holds {found_dtype} {shape}; the manifest expects {np.dtype(dtype)} {(rows, *row_shape)}")
        if path.stat().st_size != offset + rows * int(np.prod(row_shape)) * np.dtype(dtype).itemsize:
            raise StoreError(f"{path}: {path.stat().st_size} bytes, not the {rows} rows its header promises; rewrite the store")
        out.append((path, offset, rows))
    return out


def file_digest(path: Path, offset: int) -> str:
    """sha256 of a file's bytes from `offset` on, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(SHARD_BYTES // 4):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, Any], fields: tuple[str, ...]) -> str:
    """A digest of a manifest's `fields`: what the store holds, and a check that the manifest is as written."""
    return hashlib.sha256(json.dumps([manifest[name] for name in fields], sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path, what: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """A store's manifest, with a clear error where there is none, or it cannot be read or does not match its digest."""
    path = folder / MANIFEST
    if not path.is_file():
        raise StoreError(f"{folder}: no {what} here (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: corrupt manifest ({err}); rewrite the {what}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: not a format-{FORMAT} {what}; rewrite it")
    try:
        intact = manifest_digest(manifest, fields) == manifest["digest"]
    except (KeyError, TypeError):
        intact = False
    if not intact:
        raise StoreError(f"{path}: does not match its digest (changed or corrupted); rewrite the {what}")
    return manifest


def index_digest(frames: Iterable[pl.DataFrame]) -> str:
    """A digest of the index's content (not of its Parquet bytes, which depend on the writer's version); the same
    however the rows come in chunks, so a reader checks the index a batch at a time."""
    columns = {name: hashlib.sha256() for name in INDEX_COLUMNS}
    for frame in frames:
        for name, digest in columns.items():
            digest.update("".join(f"{value}\x1f" for value in frame[name].to_list()).encode())
    return hashlib.sha256("".join(digest.hexdigest() for digest in columns.values()).encode()).hexdigest()


def _split_images(tables: Path, prepared: Path, split_path: Path, splits: tuple[str, ...]) -> pl.DataFrame:
    """(image_id, split, caption, file, sha256, reason) of the tables' images with a path and one of `splits`, by split then id."""
    assigned = pl.read_parquet(split_path).filter(pl.col("split").is_in(list(splits))).select("image_id", "split")
    images = with_pixels(tables, prepared).join(assigned, on="image_id")
    order = pl.col("split").replace_strict({name: k for k, name in enumerate(splits)}, return_dtype=pl.Int32)
    return images.sort(order, "image_id").select("image_id", "split", "caption", "file", "sha256", "reason")


def _write_split(images: pl.DataFrame, name: str, size: int, writer: ShardWriter, columns: dict[str, list],
                 skipped: Counter) -> None:
    rows = images.filter(pl.col("split") == name).select("image_id", "caption", "file", "sha256", "reason")
    for image_id, caption, file, sha256, reason in rows.iter_rows():
        pixels, reason = read_pixels(Path(file), size) if not reason else (None, reason)
        if pixels is None:
            skipped[f"{name}.{reason}"] += 1
            continue
        shard, row = writer.add(pixels)
        for key, value in zip(INDEX_COLUMNS, (image_id, name, shard, row, caption, sha256)):
            columns[key].append(value)


def write_image_store(tables: Path, prepared: Path, split_path: Path, size: int, out_dir: Path, shard_rows: int | None = None,
                      splits: tuple[str, ...] = TRAINING_SPLITS) -> dict[str, Any]:
    """Copy every prepared image of `splits` (stage `prepare_images`, at `size` px) into a store at `out_dir`
    (replacing any store there).

    Only the images of `splits` are opened, so a store of the training splits never reads a cold image.
    Images without a readable prepared file are skipped and counted by `<split>.<reason>`, as `read_split` counts them.

    Returns:
        The manifest: size, shard_rows, count per split, skipped by reason, digests.
    """
    images = _split_images(tables, prepared, split_path, splits)
    rows = shard_rows or default_shard_rows((3, size, size), np.uint8)
    manifest: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        columns, skipped, shards = {name: [] for name in INDEX_COLUMNS}, Counter(), {}
        for name in splits:
            writer = ShardWriter(tmp / SHARDS, name, rows, (3, size, size), np.uint8)
            _write_split(images, name, size, writer, columns, skipped)
            shards[name] = writer.close()
        index = pl.DataFrame(columns, schema=INDEX_SCHEMA)
        index.write_parquet(tmp / INDEX, row_group_size=INDEX_BATCH)  # a reader checks it a row group at a time
        digest = index_digest([index])
        counts = {name: sum(shard["rows"] for shard in shards[name]) for name in splits}
        manifest.update(format=FORMAT, size=size, shard_rows=rows, splits=list(splits), counts=counts,
                        skipped=dict(sorted(skipped.items())), index_digest=digest, shards=shards)
        manifest["digest"] = manifest_digest(manifest, DIGESTED)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    replace_folder(out_dir, write)
    return manifest


class ImageStore:
    """A written image store, checked on opening: manifest, index and every shard's header and length.

    Args:
        folder: the store's folder.
        size: the image size the caller's model expects; a store of another size is an error.

    Raises:
        StoreError: naming what is missing, corrupt or mismatched, and where.
    """

    def __init__(self, folder: Path, size: int | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder, "image store", DIGESTED)
        self.size, self.shard_rows = int(self.manifest["size"]), int(self.manifest["shard_rows"])
        if size is not None and size != self.size:
            raise StoreError(f"{self.folder}: holds {self.size}-px images; {size} px asked: write a store at {size} px")
        self._check_index()
        self._shards = {name: checked_shards(self.folder / SHARDS, self.manifest["shards"][name], self.shard_rows,
                                             (3, self.size, self.size), np.uint8) for name in self.splits}
        for name, shards in self._shards.items():
            if sum(rows for _, _, rows in shards) != self.count(name):
                raise StoreError(f"{self.folder}: the {name} shards hold {sum(r for _, _, r in shards)} rows, "
                                 f"the manifest counts {self.count(name)}; rewrite the store")

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    @property
    def digest(self) -> str:
        """What the store holds: its size, layout, index and every shard's pixels."""
        return self.manifest["digest"]

    def count(self, split: str) -> int:
        return int(self.manifest["counts"][self._known(split)])

    def index(self, split: str) -> pl.DataFrame:
        """The split's index rows in row order (read from disk on each call: the store keeps none in memory)."""
        table = pq.read_table(self.folder / INDEX, filters=[("split", "==", self._known(split))])
        return pl.from_arrow(table.replace_schema_metadata())

    def ids(self, split: str) -> list[str]:
        return self.index(split)["image_id"].to_list()

    def captions(self, split: str) -> list[str]:
        return self.index(split)["caption"].to_list()

    def dataset(self, split: str) -> ShardDataset:
        """The split's images as (uint8 tensor (3, size, size), row) items; pixels in [0, 1] are `image / 255`."""
        if not self.count(split):
            raise StoreError(f"{self.folder}: no readable {split} images (skipped: {self.manifest['skipped']})")
        return ShardDataset(self._shards[split], self.shard_rows, (3, self.size, self.size), np.uint8, f"{self.digest}:{split}")

    def verify(self) -> None:
        """Hash every shard's pixels against the manifest (reads the whole store once, a shard at a time)."""
        for name in self.splits:
            for (path, offset, _), listed in zip(self._shards[name], self.manifest["shards"][name]):
                if file_digest(path, offset) != listed["sha256"]:
                    raise StoreError(f"{path}: pixels differ from the manifest's digest; rewrite the store")

    def _known(self, split: str) -> str:
        if split not in self.manifest["counts"]:
            raise StoreError(f"{self.folder}: no {split!r} split here; it holds {', '.join(self.splits)}")
        return split

    def _index_batches(self) -> Iterator[pl.DataFrame]:
        """The index a row group at a time, read by pyarrow on one thread (polars aborts the process on some corrupt
        files; more threads hold more memory)."""
        path = self.folder / INDEX
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=INDEX_BATCH, columns=list(INDEX_COLUMNS), use_threads=False)
            for batch in batches:
                if batch.schema.names != list(INDEX_COLUMNS):
                    raise StoreError(f"{path}: columns {batch.schema.names}, not {list(INDEX_COLUMNS)}; rewrite the store")
                batch.validate(full=True)  # pyarrow reads invalid UTF-8 as is; polars would panic on it
                yield pl.from_arrow(batch.replace_schema_metadata())
        except (OSError, UnicodeDecodeError, pa.ArrowException, pl.exceptions.PolarsError,
                pl.exceptions.PanicException) as err:
            raise StoreError(f"{path}: missing or unreadable index ({err}); rewrite the store") from err

    def _check_index(self) -> None:
        """The index matches the manifest's digest and counts, and every row sits where the layout puts it."""
        seen = Counter()

        def placed(frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
            for frame in frames:
                for name in self.splits:
                    rows = frame.filter(pl.col("split") == name)
                    position = seen[name] + np.arange(rows.height)
                    shard, row = rows["shard"].to_numpy(), rows["row"].to_numpy()
                    wrong = (shard != position // self.shard_rows) | (row != position % self.shard_rows)
                    if wrong.any():
                        raise StoreError(f"{self.folder / INDEX}: {name} rows do not match the shards "
                                         f"(first: {rows['image_id'][int(np.argmax(wrong))]}); rewrite the store")
                    seen[name] += rows.height
                yield frame

        if index_digest(placed(self._index_batches())) != self.manifest["index_digest"]:
            raise StoreError(f"{self.folder / INDEX}: differs from the manifest's index digest; "
                             "the store was changed or half copied")
        if dict(seen) != {name: count for name, count in self.manifest["counts"].items() if count}:
            raise StoreError(f"{self.folder / INDEX}: rows per split {dict(seen)}, the manifest counts {self.manifest['counts']}")
