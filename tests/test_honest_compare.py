"""Honest comparisons: the statistics against hand-computed values, a hand-made registry with known predictions
(compare --by model, compare A B), and real runs whose --seed leaves the split alone."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys

import pytest

from zoo import stats
from zoo.comparing import Member, rank_groups, verdict
from zoo.predictions import Predictions
from zoo.spec import RunSpec, replay_values, seed_series, split_seed_of
from zoo.store import Registry

N = 50  # test images of each hand-made run


# ----------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452)])
def test_t_quantiles_match_the_printed_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_mean_interval_by_hand():
    low, high = stats.mean_interval([0.90, 0.92, 0.94])  # mean .92, sd .02, half = 4.3027 * .02 / sqrt(3)
    assert (low, high) == (pytest.approx(0.92 - 0.049683, abs=1e-6), pytest.approx(0.92 + 0.049683, abs=1e-6))
    assert stats.stdev([0.90, 0.92, 0.94]) == pytest.approx(0.02)
    assert stats.mean_interval([0.9]) is None and stats.stdev([0.9]) is None


def test_mcnemar_exact_by_hand():
    assert stats.mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)  # 0.0386
    assert stats.mcnemar_exact(3, 5) == pytest.approx(2 * (1 + 8 + 28 + 56) / 2 ** 8)  # 0.727
    assert stats.mcnemar_exact(12, 0) == pytest.approx(2 / 2 ** 12)
    assert stats.mcnemar_exact(4, 4) == 1.0 and stats.mcnemar_exact(0, 0) == 1.0


def test_paired_gap_by_hand():
    first = [True] * 10 + [False] * 2 + [True] * 88
    second = [False] * 10 + [True] * 2 + [True] * 88
    gap = stats.paired_gap(first, second)
    assert (gap.first_only, gap.second_only, gap.pairs) == (10, 2, 100)
    assert gap.gap == pytest.approx(0.08)
    half = stats.t_quantile(0.975, 99) * math.sqrt((12 - 100 * 0.08 ** 2) / 99 / 100)
    assert (gap.low, gap.high) == (pytest.approx(0.08 - half), pytest.approx(0.08 + half))


def test_bootstrap_interval_is_the_exact_binomial_percentiles():
    def cdf(k, n=50, p=0.9):  # P(Binomial(50, 0.9) <= k), by hand
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    low, high = stats.bootstrap_interval([True] * 45 + [False] * 5)
    assert cdf(round(low * 50) - 1) < 0.025 <= cdf(round(low * 50))
    assert cdf(round(high * 50) - 1) < 0.975 <= cdf(round(high * 50))
    assert (low, high) == (0.82, 0.98)
    assert stats.bootstrap_interval([True] * 10) == (1.0, 1.0) and stats.bootstrap_interval([]) is None
    assert stats.accuracy_bootstrap(45, 50) == (low, high)


def test_predictions_pack_round_trip():
    made = Predictions.of([3, 7, 9000], [0, 1, 2], [(0, 0.5), (2, 0.25), (2, 1.0)])
    again = Predictions.unpack(made.pack(), 3)
    assert again == made and again.correct() == {3: True, 7: False, 9000: True}
    assert again.accuracy == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------- seeds, spec
def test_split_seed_of_old_rows_is_their_seed():
    assert split_seed_of({"seed": 3}) == 3  # recorded before --split-seed: --seed chose the split
    assert split_seed_of({"seed": 3, "split_seed": 42}) == 42
    assert split_seed_of({}) == 42
    assert replay_values({"seed": 3, "data": "d"}, same_model=True)["split_seed"] == 3
    assert RunSpec("tinycnn", "d", seed=1).split_key == RunSpec("tinycnn", "d", seed=2).split_key
    assert RunSpec("tinycnn", "d", split_seed=1).split_key != RunSpec("tinycnn", "d").split_key
    assert seed_series(None, 3) == [42, 43, 44] and seed_series([0], 2) == [0, 1]


# ----------------------------------------------------------------------------------------- hand-made registry
def add(reg, model, seed, wrong, *, split="fp-split", predictions=True):
    """A finished run whose test predictions are wrong exactly on the images numbered in ``wrong``."""
    run_id = reg.start_run(model=model, plugin="builtin", params={"seed": seed, "lr": 0.01}, name=None, device="cpu",
                           tags=None, dataset={"path": "/data/x", "fingerprint": "fp-data", "split_fingerprint": split,
                                               "classes": ["a", "b"], "train_size": 40, "val_size": 10,
                                               "test_size": N})
    true = [i % 2 for i in range(N)]
    pred = [1 - t if i in wrong else t for i, t in enumerate(true)]
    reg.log_metrics(run_id, {"test_accuracy": 1 - len(wrong) / N, "test_loss": 0.3})
    if predictions:
        reg.log_predictions(run_id, Predictions.of(range(100, 100 + N), true, [(p, 0.9) for p in pred]))
    reg.finish_run(run_id, "completed", stop_reason="max_epochs", best_epoch=1, epochs_run=1)
    return run_id


@pytest.fixture
def known():
    """wide and narrow, 3 seeds each on one split (wide right wherever narrow is, and on 5 + 4 + 3 more images);
    c and d, one run each (c right on 3 images d misses, d on 5 that c misses); old, without predictions."""
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        for seed, wide, narrow in ((42, 5, 10), (43, 4, 8), (44, 3, 6)):
            add(reg, "wide", seed, set(range(wide)))
            add(reg, "narrow", seed, set(range(narrow)))
        ids = {"c": add(reg, "cnnc", 42, set(range(5))), "d": add(reg, "cnnd", 7, set(range(5, 8))),
               "old": add(reg, "old", 42, set(range(5)), predictions=False)}
    return ids


def test_compare_by_model_aggregates_seeds(cli, known):
    result = cli("compare", "--by", "model", "--format", "json")
    assert result.exit_code == 0, result.output
    groups = {g["group"]: g for g in json.loads(result.stdout)}
    wide, narrow = groups["wide"], groups["narrow"]
    assert (wide["n"], narrow["n"]) == (3, 3)
    assert wide["mean"] == pytest.approx(0.92) and wide["std"] == pytest.approx(0.02)
    assert (wide["min"], wide["max"]) == (pytest.approx(0.90), pytest.approx(0.94))
    assert wide["ci_low"] == pytest.approx(0.92 - 0.049683, abs=1e-6) and wide["interval"] == "t"
    assert narrow["mean"] == pytest.approx(0.84) and narrow["std"] == pytest.approx(0.04)
    assert narrow["ci_high"] == pytest.approx(0.84 + 4.302653 * 0.04 / math.sqrt(3), abs=1e-5)
    assert groups["cnnc"]["interval"] == "bootstrap" and (groups["cnnc"]["ci_low"], groups["cnnc"]["ci_high"]) == (
        pytest.approx(0.82), pytest.approx(0.98))  # 45 of 50 right: the exact binomial percentiles
    # a run without predictions: its accuracy and test size give the same interval
    assert (groups["old"]["ci_low"], groups["old"]["ci_high"]) == (groups["cnnc"]["ci_low"], groups["cnnc"]["ci_high"])
    means = [g["mean"] for g in json.loads(result.stdout)]
    assert means == sorted(means, reverse=True)
    assert narrow["vs_leader"] == "tied"  # .7406-.9394 overlaps the leader's bootstrap interval
    table = cli("compare", "--by", "model")
    assert "0.9200 ± 0.0200" in table.stdout and "0.8703" in table.stdout
    csv_out = cli("compare", "--by", "model", "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("rank,model,n,mean_accuracy,std,min,max,ci_low,ci_high")
    assert "| wide" in cli("compare", "--by", "model", "--format", "markdown").stdout
    best = json.loads(cli("compare", "--by", "model", "--best", "--format", "json").stdout)
    assert {r["model"] for r in best} == {"wide", "narrow", "cnnc", "cnnd", "old"} and best[0]["value"] == 0.94


def test_compare_two_models_pools_matching_seeds(cli, known):
    result = cli("compare", "wide", "narrow", "--format", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["verdict"]
    assert (found["first_only_right"], found["second_only_right"], found["seeds"]) == (12, 0, 3)
    assert found["p_value"] == pytest.approx(2 / 2 ** 12) and found["gap"] == pytest.approx(12 / 150)
    assert found["significant"]
    text = cli("compare", "wide", "narrow").stdout
    assert "wide beats narrow on this data: +8.0 points" in text and "p < 0.001" in " ".join(text.split())


def test_compare_two_runs_with_no_real_difference(cli, known):
    found = json.loads(cli("compare", "cnnc", "cnnd", "--format", "json").stdout)["verdict"]
    assert (found["first_only_right"], found["second_only_right"]) == (3, 5)
    assert found["p_value"] == pytest.approx(0.7265625) and not found["significant"]
    text = " ".join(cli("compare", str(known["c"]), str(known["d"])).stdout.split())
    assert "No detectable difference between run" in text and "p = 0.73" in text


def test_compare_without_predictions_says_why(cli, known):
    text = " ".join(cli("compare", "old", "wide").stdout.split())
    assert "cannot pair" in text and "before zoo kept test predictions" in text
    bad = cli("compare", "wide", "narrow", "cnnc")
    assert bad.exit_code == 1 and "two sides" in bad.output


def test_verdict_refuses_different_test_sets():
    preds = Predictions.of([0, 1], [0, 1], [(0, 1.0), (1, 1.0)])
    found = verdict("a", [Member(1, 1.0, 42, "s1", preds)], "b", [Member(2, 1.0, 42, "s2", preds)])
    assert found.gap is None and "--split-seed" in found.sentence()
    ranked = rank_groups({"a": [Member(1, 0.9), Member(2, 0.91), Member(5, 0.92)],
                          "b": [Member(3, 0.5), Member(4, 0.52), Member(6, 0.51)]},
                         lower_is_better=False, accuracy=True)
    assert [g.label for g in ranked] == ["a", "b"] and ranked[1].tied is False


def test_old_registry_without_the_predictions_table_still_compares(cli, known):
    from conftest import TORCH_PROBE as probe

    con = sqlite3.connect(os.environ["ZOO_REGISTRY"])
    con.execute("DROP TABLE predictions")
    con.execute("DELETE FROM schema_migrations WHERE version = 3")
    con.commit()
    con.close()
    result = cli("compare", "--by", "model", "--format", "json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 5
    assert "cannot pair" in cli("compare", "wide", "narrow").stdout
    for args in (["compare", "--by", "model"], ["compare", "wide", "narrow"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr.strip().endswith("NO-TORCH"), (args, done.stderr)


# ----------------------------------------------------------------------------------------- real runs
def test_seeds_share_the_split_and_record_predictions(cli, make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "--data", data, "--seeds", "2", "--split-seed", "42,7", "--epochs", "1",
                 "--image-size", "16", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        from zoo.store import comparisons

        runs = [reg.get_run(i) for i in (1, 2, 3)]
        with reg.connect() as conn:
            preds = comparisons.predictions(conn, [1, 2, 3])
    assert [r.params["seed"] for r in runs] == [42, 43, 42]  # --split-seed varies slowest
    assert [r.params["split_seed"] for r in runs] == [42, 42, 7]
    assert runs[0].split_fingerprint == runs[1].split_fingerprint != runs[2].split_fingerprint
    for run in runs:
        made = preds[run.id]
        assert len(made) == run.test_size and made.accuracy == pytest.approx(run.metrics["test_accuracy"])
        assert all(0.0 <= q <= 1.0 for q in made.prob)
    assert preds[1].index == preds[2].index  # the same test images, so the runs pair
    text = " ".join(cli("compare", "1", "2").stdout.split())
    assert f"McNemar's exact test on {runs[0].test_size} paired test predictions" in text


def test_report_and_ui_show_the_means_ties_and_verdicts(cli, known, tmp_path):
    ids = [str(i) for i in range(1, 7)]  # wide and narrow, 3 seeds each
    out = tmp_path / "report.md"
    assert cli("report", *ids, "-o", out).exit_code == 0
    text = out.read_text()
    assert "| wide | 3 | 0.9200 ± 0.0200 | 0.8703 – 0.9697 | leader |" in text
    assert "| narrow | 3 | 0.8400 ± 0.0400 | 0.7406 – 0.9394 | tied |" in text
    assert "- wide beats narrow on this data: +8.0 points" in text
    pytest.importorskip("uvicorn")
    from test_web import LiveServer

    server = LiveServer(os.environ["ZOO_REGISTRY"])
    try:
        status, page, _ = server.get("/compare?run=" + "+".join(ids))
    finally:
        server.stop()
    assert status == 200 and 'id="by-model"' in page and "0.9200 ± 0.0200" in page
    assert "wide beats narrow on this data" in page


def test_predictions_round_trip_on_every_backend(registry_location):
    from zoo.store import comparisons

    made = Predictions.of([5, 9], [0, 1], [(0, 0.75), (0, 0.5)])
    with Registry.open(registry_location) as reg:
        run_id = add(reg, "m", 42, set())
        reg.log_predictions(run_id, made)  # again: replaces the first
        with reg.connect() as conn:
            assert comparisons.predictions(conn, [run_id]) == {run_id: made}
        reg.delete_runs([run_id])
        with reg.connect() as conn:
            assert comparisons.predictions(conn, [run_id]) == {}
