"""Image sets with a tiny seeded sampler: PNGs named by content, a manifest row per image, the same bytes again."""

import hashlib
from dataclasses import asdict

import polars as pl
import pytest
import torch

from prefgen.serving.image_sets import (
    BatchRequest,
    BundleRef,
    Made,
    RequestError,
    cpu_isa,
    find_row,
    generate,
    generate_batch,
    machine,
    merge_manifest,
    png_bytes,
    regeneration_verdict,
)
from tests.generation.test_sampling import pipeline

# The tiny sampler knows the conditions "a" and "b", as segments and as prompts.
REF = BundleRef("prefgen-bundle", "3", "d" * 64)


def test_cpu_isa_names_the_kernel_extensions_so_two_cpus_that_round_differently_differ(tmp_path):
    ice_lake, sapphire_rapids = tmp_path / "a", tmp_path / "b"
    ice_lake.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 avx512f avx512_vnni\n")
    sapphire_rapids.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile\n")
    assert cpu_isa(ice_lake) == "avx2+avx512f+avx512_vnni"
    assert cpu_isa(sapphire_rapids) == "avx2+avx512f+avx512_vnni+avx512_bf16+avx512_fp16+amx_tile"
    assert cpu_isa(tmp_path / "missing") == "" and cpu_isa(_empty(tmp_path)) == ""


def _empty(folder):
    (folder / "empty").write_text("processor\t: 0\n")
    return folder / "empty"


def test_png_bytes_are_deterministic_and_carry_their_text():
    pixels = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    first, again = png_bytes(pixels, {"prefgen.seed": "1"}), png_bytes(pixels.clone(), {"prefgen.seed": "1"})
    assert first == again and first.startswith(b"\x89PNG") and b"prefgen.seed" in first
    assert png_bytes(pixels, {"prefgen.seed": "2"}) != first


def test_generate_writes_content_named_files_and_a_manifest_a_rerun_merges(tmp_path):
    pipe = pipeline()
    rows = generate(pipe, [BatchRequest("a", "b", (0, 1)), BatchRequest("b", "b", (0,))], REF, tmp_path, {"run_id": "r1"})
    manifest = pl.read_parquet(tmp_path / "manifest.parquet")
    assert manifest.height == 3 and manifest["generation_run_id"].to_list() == ["r1"] * 3
    for row in rows:
        data = (tmp_path / row["file"]).read_bytes()
        assert row["file"] == f"images/{hashlib.sha256(data).hexdigest()}.png" == f"images/{row['image_sha256']}.png"
    assert rows[0]["batch_seeds"] == [0, 1] and rows[1]["batch_index"] == 1 and rows[0]["bundle_version"] == "3"
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary file left behind

    generate(pipe, [BatchRequest("a", "a", (5,))], REF, tmp_path, {"run_id": "r2"})
    merged = pl.read_parquet(tmp_path / "manifest.parquet")
    assert merged.height == 4 and merged["image_sha256"].n_unique() == 4  # old rows kept, the new one added


def test_a_batch_made_again_from_its_row_has_the_same_bytes():
    pipe = pipeline()
    (_, row), = [generate_batch(pipe, BatchRequest("a", "b", (7, 8)), REF)[1]]
    again = generate_batch(pipe, BatchRequest(row["segment"], row["prompt"], tuple(row["batch_seeds"])), REF)[row["batch_index"]]
    assert again[1]["image_sha256"] == row["image_sha256"]
    other_seed = generate_batch(pipe, BatchRequest("a", "b", (7, 9)), REF)[1]
    assert other_seed[1]["image_sha256"] != row["image_sha256"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": "   "}, "the prompt is empty"), ({"prompt": "x" * 301}, "301 characters, at most 300"), ({"seeds": ()}, "no seeds"),
])
def test_bad_requests_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(RequestError, match=message):
        BatchRequest(**({"segment": "grp:g1", "prompt": "a star", "seeds": (0,)} | kwargs))


def test_rows_are_found_by_a_sha_prefix_but_not_an_ambiguous_one():
    manifest = pl.DataFrame({"image_sha256": ["abcdef0011", "abcdef0022"], "seed": [1, 2]})
    assert find_row(manifest, "abcdef0022")["seed"] == 2
    assert find_row(manifest, "12345678") is None
    with pytest.raises(RequestError, match="matches 2 images"):
        find_row(manifest, "abcdef00")
    with pytest.raises(RequestError, match="at least 8 hex digits"):
        find_row(manifest, "abc")


def test_a_row_records_where_its_image_was_made():
    pipe = pipeline()
    (_, row), = generate_batch(pipe, BatchRequest("a", "b", (3,)), REF)
    recorded = (row["device"], row["dtype"], row["torch_version"], row["machine"])
    assert recorded == ("cpu", "float32", torch.__version__, machine("cpu"))
    assert Made.of_row(row) == Made.by(pipe)


def test_a_manifest_from_before_the_device_columns_still_reads_as_made_on_the_cpu_in_float32(tmp_path):
    old = {"image_sha256": "0" * 64, "seed": 1, "machine": "Linux-x86_64 torch 2.5.1 cpu avx2+avx512f"}
    merge_manifest(tmp_path, [old])
    pipe = pipeline()
    generate(pipe, [BatchRequest("a", "b", (0,))], REF, tmp_path, {"run_id": "r1"})
    rows = pl.read_parquet(tmp_path / "manifest.parquet").rows(named=True)
    assert Made.of_row(rows[0]) == Made("cpu", "float32", "2.5.1", old["machine"])
    assert Made.of_row(rows[1]) == Made.by(pipe)


def test_a_regeneration_promises_bytes_only_where_it_is_made_alike_and_scores_elsewhere():
    row = {"image_sha256": "a" * 64, "preference_score": 0.70, "text_score": 0.30}
    here = Made("cpu", "float32", "2.5.1", "Linux-x86_64 torch 2.5.1 cpu avx2")
    same_bytes, other_bytes = row | {"preference_score": 0.71}, row | {"image_sha256": "b" * 64, "text_score": 0.32}
    alike = regeneration_verdict(row, other_bytes, here, here)
    assert (alike["promise"], alike["differs"], alike["match"], alike["kept"]) == ("byte-identical", [], False, False)
    assert regeneration_verdict(row, same_bytes, here, here)["kept"]
    on_gpu = Made("cuda", "float32", "2.5.1", "Linux-x86_64 torch 2.5.1 NVIDIA H100")
    elsewhere = regeneration_verdict(row, other_bytes, here, on_gpu, tolerance=0.05)
    assert elsewhere["promise"] == "scores within 0.05" and elsewhere["differs"][0] == "device cpu -> cuda"
    assert not elsewhere["match"] and elsewhere["scores_match"] and elsewhere["kept"]
    far = regeneration_verdict(row, other_bytes | {"preference_score": 0.9}, here, on_gpu, tolerance=0.05)
    assert not far["kept"] and far["score_gaps"]["preference_score"] == pytest.approx(0.2)


def test_the_thread_count_an_image_was_made_with_is_recorded_and_differs_only_where_known():
    """A kernel's rounding may depend on how it splits over threads: `prefgen regenerate` sets the recorded count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        made = Made.by(pipeline())
        assert made.threads == 1 and Made.of_row(asdict(made)) == made
        here = Made("cpu", "float32", "2.5.1", "m", threads=1)
        assert here.differences(Made("cpu", "float32", "2.5.1", "m", threads=2)) == ["threads 1 -> 2"]
        assert Made("cpu", "float32", "2.5.1", "m").differences(here) == []  # a row from before the column
    finally:
        torch.set_num_threads(before)
