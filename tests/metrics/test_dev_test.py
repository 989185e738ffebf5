"""The dev/test halves: stable per key, about even, independent of the other keys."""

from prefgen.metrics.dev_test import half, in_test_half


def test_a_key_keeps_its_half_whatever_else_is_in_the_set():
    keys = [f"ind:u{k}" for k in range(2000)]
    mask = in_test_half(keys)
    assert 0.45 < mask.mean() < 0.55
    assert (in_test_half(keys[:100] + ["grp:new"])[:100] == mask[:100]).all()
    assert [half(key) for key in keys[:5]] == ["test" if m else "dev" for m in mask[:5]]
    assert half("grp:g1") == half("grp:g1") and {half(f"x{k}") for k in range(20)} == {"dev", "test"}
