"""Step 1 stage inputs: member features log-scaled per column, members absent from the graph counted."""

import numpy as np
import polars as pl

from prefgen.preference.stage_data import _follows, _member_features, item_features, standardise_log


def test_standardise_log_logs_columns_below_one_and_counts_with_zeros():
    pagerank = np.array([1e-4, 1e-3, 1e-2])  # all positive, all << 1: log1p would leave them unlogged
    counts = np.array([0.0, 1.0, 3.0])
    out = standardise_log(np.stack([pagerank, counts], axis=1))
    assert np.allclose(np.diff(out[:, 0]), np.diff(out[:, 0])[0])  # equal steps: logged
    assert np.allclose(out.mean(axis=0), 0) and np.allclose(out.std(axis=0), 1)
    expected = np.log1p(counts)  # smallest positive count is 1: log1p(x / 1)
    assert np.allclose(out[:, 1], (expected - expected.mean()) / expected.std())


def test_members_missing_from_the_social_graph_are_counted(tmp_path):
    pl.DataFrame({"individual_id": ["a", "b"], "segment_id": ["ind:a", "ind:b"], "pagerank": [0.1, 0.2]}).write_parquet(tmp_path / "individuals.parquet")
    pl.DataFrame({"group_segment_id": ["grp:g", "grp:g"], "member_segment_id": ["ind:a", "ind:b"],
                  "in_degree": [1.0, 0.0]}).write_parquet(tmp_path / "group_members.parquet")
    members = pl.DataFrame({"group_id": ["g", "g", "g"], "member_id": ["a", "b", "ghost"], "since": [0, 0, 0]})
    features, names, absent = _member_features(members, tmp_path)
    assert names == ["pagerank", "in_group.in_degree"] and absent == 1 and features.shape == (3, 2)


def test_item_features_fill_missing_images_with_zeros_and_count_them(tmp_path):
    pl.DataFrame({"image_id": ["i1", "i2"], "vector": [[1.0, 2.0], [3.0, 4.0]]}).write_parquet(tmp_path / "semantic.parquet")
    matrix, missing = item_features(tmp_path / "semantic.parquet", ["i2", "i9", "i1"])
    assert missing == 1 and matrix.tolist() == [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]
    assert item_features(tmp_path / "absent.parquet", ["i1"]) == (None, 1)


def test_follows_are_kept_between_known_individuals_and_the_rest_counted(tmp_path):
    pl.DataFrame({"follower_id": ["a", "b", "a", "a", "ghost"], "followee_id": ["b", "c", "a", "ghost", "c"],
                  "since": [0] * 5}).write_parquet(tmp_path / "follows.parquet")
    pairs, outside = _follows(tmp_path, {"a": 0, "b": 1, "c": 2})
    assert pairs.tolist() == [[0, 1], [1, 2]] and outside == 2  # the self-follow is dropped, not counted
