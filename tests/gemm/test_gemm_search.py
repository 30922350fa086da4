"""Search bookkeeping and the JSON search cache."""

from __future__ import annotations

import json

import pytest

from slidesparse.core.timing import Timing
from slidesparse.gemm.search import SCHEMA_VERSION, SearchCache, cache_key, search, survivors
from slidesparse.gemm.torch_builtin import SPLIT_K_MAX_OUTPUT, cslt_candidates


def _trial(times):
    def trial(config):
        t = times[config["id"]]
        if t is None:
            raise RuntimeError("CUSPARSE_STATUS_NOT_SUPPORTED\nmore lines")
        return Timing((t, t + 1, t + 2), "fake")

    return trial


def test_cache_key_names_every_dimension():
    k = cache_key("cusparselt", "int8", "int32", "2_8", 4608, 3584, 16384)
    assert k == "cusparselt|int8->int32|2_8|N4608|K3584|M16384"
    assert k != cache_key("cusparselt", "int8", "int32", "2_8", 4608, 3584, 8192)


def test_search_picks_fastest_and_records_rejections(tmp_path):
    cache = SearchCache.open(tmp_path, "H200_cc90")
    cands = [{"id": 0}, {"id": 1}, {"id": 2}]
    res = search(cands, _trial([5.0, 2.0, None]), cache=cache, key="k")
    assert res.config == {"id": 1} and not res.cached
    assert res.n_tried == 3 and res.n_rejected == 1
    doc = json.loads((tmp_path / "gemm_search.json").read_text())
    assert doc["schema"] == SCHEMA_VERSION and doc["gpu_tag"] == "H200_cc90"
    entry = doc["entries"]["k"]
    assert entry["config"] == {"id": 1} and entry["best_us"] == 3.0
    assert entry["rejected"][0].endswith("CUSPARSE_STATUS_NOT_SUPPORTED")


def test_second_search_reuses_cache_without_trials(tmp_path):
    search(
        [{"id": 0}, {"id": 1}], _trial([1.0, 2.0]), cache=SearchCache.open(tmp_path, "t"), key="k"
    )

    def boom(config):
        raise AssertionError("cached search must not run trials")

    res = search([{"id": 0}, {"id": 1}], boom, cache=SearchCache.open(tmp_path, "t"), key="k")
    assert res.cached and res.config == {"id": 0}


def test_cache_of_another_gpu_tag_is_ignored(tmp_path):
    search([{"id": 0}], _trial([1.0]), cache=SearchCache.open(tmp_path, "H100_cc90"), key="k")
    assert SearchCache.open(tmp_path, "H200_cc90").get("k") is None


def test_corrupt_cache_reads_empty_and_is_rewritten(tmp_path):
    (tmp_path / "gemm_search.json").write_text("{not json")
    cache = SearchCache.open(tmp_path, "t")
    assert cache.entries == {}
    search([{"id": 0}], _trial([1.0]), cache=cache, key="k")
    assert json.loads((tmp_path / "gemm_search.json").read_text())["entries"]["k"]


def test_put_merges_entries_written_by_another_worker(tmp_path):
    a, b = SearchCache.open(tmp_path, "t"), SearchCache.open(tmp_path, "t")
    search([{"id": 0}], _trial([1.0]), cache=a, key="ka")
    search([{"id": 0}], _trial([1.0]), cache=b, key="kb")
    assert set(SearchCache.open(tmp_path, "t").entries) == {"ka", "kb"}
    assert not list(tmp_path.glob(".gemm_search.*.tmp"))


def test_every_candidate_failing_raises():
    with pytest.raises(RuntimeError, match="every candidate failed"):
        search([{"id": 0}], _trial([None]), cache=None, key="k")


def test_cslt_grid_split_k_only_for_small_outputs_and_segment_k_on_hopper():
    big = cslt_candidates(3, 16384, 4608, (9, 0))
    assert {(c["split_k"], c["split_k_mode"]) for c in big} == {(1, -1), (-1, -1)}
    assert {c["alg_id"] for c in big} == {0, 1, 2}
    assert cslt_candidates(2, 64, 512, (9, 0), split_k=False) == [
        {"alg_id": 0, "split_k": 1, "split_k_mode": -1},
        {"alg_id": 1, "split_k": 1, "split_k_mode": -1},
    ]
    small = cslt_candidates(2, 64, 512, (8, 0), split_k=True)
    assert SPLIT_K_MAX_OUTPUT >= 64 * 512
    assert (4, 2) in {(c["split_k"], c["split_k_mode"]) for c in small}
    assert (-1, -1) not in {(c["split_k"], c["split_k_mode"]) for c in small}  # sm80: no seg-K
    narrow = cslt_candidates(1, 64, 256, (9, 0), split_k=True)  # N < 400: no Segment-K
    assert all(c["split_k"] != -1 for c in narrow)
    torch_grid = cslt_candidates(1, 64, 512, (9, 0), modes=False, split_k=True)
    assert {c["split_k_mode"] for c in torch_grid} == {-1}
    both = cslt_candidates(3, 16384, 4608, (9, 0), layouts=(0, 1))
    assert len(both) == 2 * len(big) and {c["layout"] for c in both} == {0, 1}


def test_quick_round_passes_only_the_best_to_full_trials():
    n = 40
    quick_times = [float(i) for i in range(n)]
    full_calls = []

    def quick(config):
        return Timing((quick_times[config["id"]],), "fake")

    def full(config):
        full_calls.append(config["id"])
        # The full trial disagrees with the quick one on the order of the survivors.
        return Timing((100.0 - config["id"],), "fake")

    res = search([{"id": i} for i in range(n)], full, cache=None, key="k", quick=quick)
    assert sorted(full_calls) == list(range(survivors(n)))
    assert res.config == {"id": survivors(n) - 1}


def test_small_grids_skip_the_quick_round():
    def quick(config):
        raise AssertionError("3 candidates need no quick round")

    res = search([{"id": 0}, {"id": 1}, {"id": 2}], _trial([3.0, 1.0, 2.0]), cache=None, key="k",
                 quick=quick)  # fmt: skip
    assert res.config == {"id": 1}


def test_rounds_interleave_candidates_and_playoff_decides():
    order = []
    # Candidate 0 is fast in the first full pass only (a lucky streak); the playoff re-times
    # the finalists afresh and must pick the one that stays fast.
    times = {0: [1.0, 1.0, 9.0, 9.0], 1: [2.0, 2.0, 2.0, 2.0], 2: [5.0, 5.0, 5.0, 5.0]}

    def trial(config):
        i = config["id"]
        order.append(i)
        t = times[i][sum(1 for j in order if j == i) - 1]
        return Timing((t,), "fake")

    res = search([{"id": 0}, {"id": 1}, {"id": 2}], trial, cache=None, key="k", rounds=2)
    assert order[:6] == [0, 1, 2, 0, 1, 2]  # round-robin, not one candidate after another
    assert res.config == {"id": 1}


def test_batched_quick_pass_ranks_all_candidates_at_once_and_records_errors():
    n = 40
    batches = []

    def quick_many(configs):
        batches.append(len(configs))
        return ["bad plan" if c["id"] == 0 else Timing((float(c["id"]),), "fake") for c in configs]

    full = []
    res = search([{"id": i} for i in range(n)], lambda c: full.append(c["id"]) or
                 Timing((float(c["id"]),), "fake"), cache=None, key="k",
                 quick_many=quick_many)  # fmt: skip
    assert batches == [n] and sorted(full) == list(range(1, survivors(n) + 1))
    assert res.config == {"id": 1} and res.n_rejected == 1


def test_a_batch_that_fails_falls_back_to_one_quick_timing_per_candidate():
    def quick_many(configs):
        raise RuntimeError("one launch failed the batch")

    quick = []
    res = search([{"id": i} for i in range(20)], _trial([float(20 - i) for i in range(20)]),
                 cache=None, key="k", quick_many=quick_many,
                 quick=lambda c: quick.append(c) or Timing((20.0 - c["id"],), "fake"))  # fmt: skip
    assert len(quick) == 20 and res.config == {"id": 19}


def test_time_many_interleaves_the_calls_and_times_each():
    from slidesparse.core import timing

    order = []
    fns = [lambda i=i: order.append(i) for i in range(3)]
    times = timing.time_many(fns, "cpu", samples=2, warmup=1)
    assert order == [0, 1, 2] * 3 and [len(t.samples_us) for t in times] == [2, 2, 2]
