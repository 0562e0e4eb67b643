"""evaluation.protocol (hand-computed cases, a sort-based oracle) and the evaluator."""
import numpy as np
import pytest

from reid_baseline.evaluation.protocol import chance_rank1, evaluate_ranking

try:  # tests/ on sys.path (pytest rootdir-style imports) or tests as a package
    from reference_impls import reference_evaluate
except ImportError:  # pragma: no cover
    from tests.reference_impls import reference_evaluate


def _eval(dist, q, g, mode, max_rank=5):
    """q, g: lists of (pid, camid)."""
    return evaluate_ranking(np.asarray(dist, dtype=np.float32), [p for p, _ in q],
                            [p for p, _ in g], [c for _, c in q], [c for _, c in g],
                            max_rank=max_rank, ap_mode=mode)


# Query: pid 1, camera 0. Gallery as (pid, camid) and distance:
#   g0 (2, 1) 0.10 negative
#   g1 (1, 1) 0.20 true match
#   g2 (-1, 1) 0.30 junk -> ignored
#   g3 (1, 0) 0.05 same pid, same camera -> ignored
#   g4 (1, 2) 0.40 true match
#   g5 (0, 1) 0.35 distractor -> negative
# Valid ranking: g0, g1, g5, g4 -> matches at 0-based ranks 1 and 3.
Q1 = [(1, 0)]
G1 = [(2, 1), (1, 1), (-1, 1), (1, 0), (1, 2), (0, 1)]
D1 = [[0.10, 0.20, 0.30, 0.05, 0.40, 0.35]]


def test_hand_case_trapezoid():
    res = _eval(D1, Q1, G1, "trapezoid")
    # i=0, r=1: recall step 1/2, old precision 0/1, precision 1/2 -> 1/8
    # i=1, r=3: recall step 1/2, old precision 1/3, precision 2/4 -> 5/24
    assert res["mAP"] == pytest.approx(1 / 8 + 5 / 24, abs=1e-15)
    assert res["mAP"] == pytest.approx(1 / 3, abs=1e-15)
    np.testing.assert_array_equal(res["cmc"], [0, 1, 1, 1, 1])
    assert res["num_valid_queries"] == 1 and res["num_skipped_queries"] == 0
    assert res["ap_mode"] == "trapezoid"


def test_hand_case_noninterp():
    res = _eval(D1, Q1, G1, "noninterp")
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-15)
    np.testing.assert_array_equal(res["cmc"], [0, 1, 1, 1, 1])


def test_max_rank_smaller_and_larger_than_gallery():
    np.testing.assert_array_equal(_eval(D1, Q1, G1, "trapezoid", max_rank=1)["cmc"], [0])
    np.testing.assert_array_equal(_eval(D1, Q1, G1, "trapezoid", max_rank=2)["cmc"], [0, 1])
    # More ranks than valid gallery items: the curve stays at 1.
    np.testing.assert_array_equal(_eval(D1, Q1, G1, "trapezoid", max_rank=8)["cmc"],
                                  [0, 1, 1, 1, 1, 1, 1, 1])


def test_ties_lower_gallery_index_first():
    # All four at distance 0.5: stable order g0, g1, g2, g3.
    g = [(2, 1), (1, 1), (1, 2), (3, 1)]
    res = _eval([[0.5] * 4], Q1, g, "trapezoid")
    # matches at ranks 1, 2: 1/2*(0+1/2)/2 + 1/2*(1/2+2/3)/2 = 1/8 + 7/24 = 5/12
    assert res["mAP"] == pytest.approx(5 / 12, abs=1e-15)
    np.testing.assert_array_equal(res["cmc"], [0, 1, 1, 1, 1])
    assert _eval([[0.5] * 4], Q1, g, "noninterp")["mAP"] == pytest.approx(7 / 12, abs=1e-15)
    # Same distances, the match now has the lowest index: it ranks first.
    g = [(1, 1), (2, 1), (3, 2), (4, 1)]
    res = _eval([[0.5] * 4], Q1, g, "trapezoid")
    assert res["mAP"] == 1.0
    np.testing.assert_array_equal(res["cmc"], [1, 1, 1, 1, 1])
    # A match tied with a negative at 0.7: the lower index (here the negative
    # g0) comes first, match at rank 2; then with the indices swapped, rank 1.
    g = [(1, 1), (2, 1), (3, 2)]
    res = _eval([[0.7, 0.2, 0.7]], Q1, [(3, 2), (2, 1), (1, 1)], "noninterp")
    assert res["mAP"] == pytest.approx(1 / 3, abs=1e-15)
    res = _eval([[0.7, 0.2, 0.7]], Q1, g, "noninterp")
    assert res["mAP"] == pytest.approx(1 / 2, abs=1e-15)


@pytest.mark.parametrize("sort_above", [0.0, 2.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_and_nan_rank_like_stable_argsort(monkeypatch, sort_above, dtype):
    import reid_baseline.evaluation.protocol as ev
    monkeypatch.setattr(ev, "_SORT_ABOVE", sort_above)
    d = np.array([[np.inf, 0.5, np.nan, 0.5, np.nan, np.inf, 0.5]], dtype)
    ids = ([1], [1, 2, 3, 1, 2, 1, 2], [0], [1, 1, 1, 2, 1, 1, 1])
    # Stable order: g1, g3 (match), g6, g0 (match), g5 (match), g2, g4 (NaN last)
    res = ev.evaluate_ranking(d, *ids, max_rank=4, ap_mode="noninterp")
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3, abs=1e-15)
    np.testing.assert_array_equal(res["cmc"], [0, 1, 1, 1])


def test_query_without_valid_match_is_skipped():
    q = [(1, 0), (7, 0), (9, 1)]  # pid 7: only same-camera copies; pid 9: absent
    g = G1 + [(7, 0), (7, 0)]
    d = [D1[0] + [0.9, 0.9]] * 3
    res = _eval(d, q, g, "trapezoid")
    assert res["num_valid_queries"] == 1 and res["num_skipped_queries"] == 2
    assert res["mAP"] == pytest.approx(1 / 3, abs=1e-15)
    np.testing.assert_array_equal(res["cmc"], [0, 1, 1, 1, 1])


def test_no_valid_query_gives_nan():
    res = _eval([[0.1, 0.2]], [(5, 0)], [(5, 0), (6, 1)], "trapezoid")
    assert res["num_valid_queries"] == 0 and res["num_skipped_queries"] == 1
    assert np.isnan(res["mAP"]) and np.isnan(res["cmc"]).all() and np.isnan(res["mINP"])


def test_minp_hand_cases():
    # D1: valid ranking g0, g1, g5, g4; 2 true matches, the hardest (g4) at rank 4 -> 2/4.
    # The same-camera g3 (closest of all) and the junk g2 are not counted before g4.
    assert _eval(D1, Q1, G1, "trapezoid")["mINP"] == pytest.approx(0.5, abs=1e-15)
    # Both matches first: 2/2 = 1; one match at rank 3: 1/3; a skipped query does not count.
    q = [(1, 0), (2, 0), (9, 0)]
    g = [(1, 1), (1, 2), (3, 1), (2, 1), (3, 2)]
    d = [[0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]]
    d[1] = [0.1, 0.2, 0.35, 0.3, 0.05]  # pid 2's match g3 after g4, g0 and g1 (rank 4)
    res = _eval(d, q, g, "noninterp")
    assert res["num_valid_queries"] == 2
    assert res["mINP"] == pytest.approx((2 / 2 + 1 / 4) / 2, abs=1e-15)
    np.testing.assert_allclose(res["query_ap"], [1.0, 1 / 4, np.nan])


def test_input_validation():
    d = np.zeros((2, 3), np.float32)
    ok = dict(q_pids=[1, 2], g_pids=[1, 2, 3], q_camids=[0, 0], g_camids=[1, 1, 1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_ranking(np.zeros(3), [1], [1, 2, 3], [0], [1, 1, 1])
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_ranking(d, **dict(ok, g_pids=[1, 2]))
    with pytest.raises(ValueError, match="q_camids"):
        evaluate_ranking(d, **dict(ok, q_camids=[0]))
    with pytest.raises(ValueError, match="trapezoid"):
        evaluate_ranking(d, **ok, ap_mode="interpolated")
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_ranking(d, **ok, max_rank=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(np.full((2, 3), np.nan, np.float32), **ok)


def _random_problem(rng, quantised, dtype):
    n_q, n_g = int(rng.integers(1, 40)), int(rng.integers(1, 120))
    n_pid = int(rng.integers(1, 12))
    q_pids = rng.integers(-1, n_pid, n_q)
    g_pids = rng.integers(-1, n_pid, n_g)
    q_cams, g_cams = rng.integers(0, 3, n_q), rng.integers(0, 3, n_g)
    if quantised:  # many exact ties, some negative values and +-0.0
        d = rng.integers(-2, 4, (n_q, n_g)) * 0.5
        d[d == 0] *= rng.choice([-1.0, 1.0], size=int((d == 0).sum()))
    else:
        d = rng.random((n_q, n_g))
    return d.astype(dtype), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("dtype,sort_above", [(np.float32, 0.0), (np.float32, 2.0),
                                              (np.float64, 0.2)])
@pytest.mark.parametrize("quantised", [True, False])
def test_matches_sort_based_oracle(dtype, sort_above, quantised, monkeypatch):
    # sort_above 0 / 2: the float32 path always / never sorts whole rows.
    import reid_baseline.evaluation.protocol as ev
    monkeypatch.setattr(ev, "_SORT_ABOVE", sort_above)
    rng = np.random.default_rng(1234 + quantised)
    checked = 0
    for _ in range(150):
        d, qp, gp, qc, gc = _random_problem(rng, quantised, dtype)
        max_rank = int(rng.integers(1, 60))
        for mode in ("trapezoid", "noninterp"):
            ref = reference_evaluate(d, qp, gp, qc, gc, max_rank, mode)
            if ref["num_valid_queries"] == 0:
                continue
            got = ev.evaluate_ranking(d, qp, gp, qc, gc, max_rank, mode)
            np.testing.assert_array_equal(got["cmc"], ref["cmc"])
            assert abs(got["mAP"] - ref["mAP"]) <= 1e-12
            assert abs(got["mINP"] - ref["mINP"]) <= 1e-12
            assert got["num_valid_queries"] == ref["num_valid_queries"]
            assert got["num_skipped_queries"] == ref["num_skipped_queries"]
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("sort_above", [0.0, 2.0])
def test_chunking_matches_oracle(monkeypatch, sort_above):
    # Force many small query chunks so the chunk bookkeeping is exercised.
    import reid_baseline.evaluation.protocol as ev
    monkeypatch.setattr(ev, "_BLOCK_ENTRIES", 500)
    monkeypatch.setattr(ev, "_SORT_ABOVE", sort_above)
    rng = np.random.default_rng(7)
    d = (rng.integers(0, 20, (97, 150)) / 4).astype(np.float32)
    qp, gp = rng.integers(0, 15, 97), rng.integers(-1, 15, 150)
    qc, gc = rng.integers(0, 4, 97), rng.integers(0, 4, 150)
    for mode in ("trapezoid", "noninterp"):
        ref = reference_evaluate(d, qp, gp, qc, gc, 20, mode)
        got = ev.evaluate_ranking(d, qp, gp, qc, gc, 20, mode)
        np.testing.assert_array_equal(got["cmc"], ref["cmc"])
        assert abs(got["mAP"] - ref["mAP"]) <= 1e-12
        assert abs(got["mINP"] - ref["mINP"]) <= 1e-12


def test_chance_rank1_by_hand():
    # Query 0 (pid 1, cam 0): gallery [1/cam0 ignored, 1/cam1 match, 2/cam1, 0/cam2, -1 junk]
    #   -> 1 match among 3 valid items = 1/3.
    # Query 1 (pid 2, cam 1): its only same-pid item is in its camera -> no match, skipped.
    # Query 2 (pid 3, cam 0): no such identity in the gallery -> skipped.
    g_pids, g_cams = [1, 1, 2, 0, -1], [0, 1, 1, 2, 0]
    assert chance_rank1([1, 2, 3], g_pids, [0, 1, 0], g_cams) == pytest.approx(1 / 3)
    # Two queries: 1/3 and (pid 2 from cam 0: matches 2/cam1 among 4 valid) 1/4.
    assert chance_rank1([1, 2], g_pids, [0, 0], g_cams) == pytest.approx((1 / 3 + 1 / 4) / 2)


def test_an_evaluation_without_a_valid_query_is_an_error_not_nan(monkeypatch):
    """Metrics of a test set whose only matches share the query's camera are undefined: one
    DatasetError, never NaN in a results file."""
    import types

    from reid_baseline.config import load_config
    from reid_baseline.data.datasets.base import Record
    from reid_baseline.errors import DatasetError
    from reid_baseline.evaluation import evaluator as retrieval
    query = [Record("q.jpg", 1, 1)]
    gallery = [Record("g0.jpg", 1, 1), Record("g1.jpg", 2, 2)]  # the match: same camera
    feats = {"query": np.eye(1, 4, dtype=np.float32), "gallery": np.eye(2, 4, dtype=np.float32)}
    monkeypatch.setattr(retrieval, "_split_features", lambda extract, records, split: feats[split])
    dataset = types.SimpleNamespace(query=query, gallery=gallery)
    with pytest.raises(DatasetError, match="none of the 1 queries has a true match"):
        retrieval.evaluate_retrieval(load_config(None, []), None, dataset, None)
