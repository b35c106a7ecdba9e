"""Multi-seed summaries (metasgd_rl.study) and the locomotion reproduction script end to end on a tiny setting."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metasgd_rl.stats import mean_ci95, welch_test
from metasgd_rl.study import seed_arrays, seed_rows, summarise_seeds

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "reproduce_locomotion.py"


def test_summary_is_the_mean_and_interval_over_seeds_and_welch_against_the_reference():
    rng = np.random.default_rng(0)
    per_seed = {"metasgd": rng.normal(1.0, 1.0, (3, 4)), "maml": rng.normal(0.0, 2.0, (3, 4)),
                "pretrained": rng.normal(0.0, 1.0, (1, 4))}
    summary = summarise_seeds(per_seed, tested=["metasgd"])
    for method, scores in per_seed.items():
        for k in range(4):
            mean, half = summary["methods"][method][k]
            expected = mean_ci95(scores[:, k])
            assert mean == pytest.approx(expected[0])
            assert (math.isnan(half) and math.isnan(expected[1])) or half == pytest.approx(expected[1])
    assert list(summary["welch_vs_maml"]) == ["metasgd"]  # only the tested method
    w = summary["welch_vs_maml"]["metasgd"][2]
    expected = welch_test(per_seed["metasgd"][:, 2], per_seed["maml"][:, 2])
    assert w["difference"] == pytest.approx(per_seed["metasgd"][:, 2].mean() - per_seed["maml"][:, 2].mean())
    assert w["p_value"] == pytest.approx(expected.p_value)
    # without `tested`, every method but the reference is tested; without the reference, none
    assert set(summarise_seeds(per_seed)["welch_vs_maml"]) == {"metasgd", "pretrained"}
    assert summarise_seeds({"metasgd": per_seed["metasgd"]})["welch_vs_maml"] == {}


def test_summary_refuses_methods_with_different_step_counts():
    with pytest.raises(ValueError, match="same number of steps"):
        summarise_seeds({"metasgd": np.zeros((2, 4)), "maml": np.zeros((2, 3))})


def test_rows_say_when_one_seed_allows_no_test():
    summary = summarise_seeds({"metasgd": [[1.0, 2.0]], "maml": [[0.0, 1.5]]})
    rows = seed_rows("Fam", summary, {"metasgd": "Meta-SGD", "maml": "MAML"})
    assert rows[0] == "| Fam | Meta-SGD | 1.0 | 2.0 |"
    assert rows[2] == "| Fam | Meta-SGD − MAML (Welch p) | +1.0 (one seed: no test) | +0.5 (one seed: no test) |"


def test_seed_arrays_orders_seeds():
    arrays = seed_arrays({"m": {2: [2.0, 3.0], 0: [0.0, 1.0]}})
    np.testing.assert_array_equal(arrays["m"], [[0.0, 1.0], [2.0, 3.0]])


TINY = ["--families", "HalfCheetahVel-v0", "--seeds", "0", "1", "--iterations", "1", "--pretrain-iterations", "1",
        "--set", "meta_batch_size=2", "--set", "episodes_per_task=2", "--set", "family_kwargs.max_episode_steps=10",
        "--eval-tasks", "2", "--eval-episodes", "2", "--eval-steps", "2"]


def _script(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_locomotion_study_trains_reuses_publishes_and_reevaluates(tmp_path):
    pytest.importorskip("mujoco")
    out, published = tmp_path / "study", tmp_path / "published"
    first = _script(*TINY, "--out", str(out), "--report-dir", str(published), "--publish")
    assert "metasgd-seed1: trained to 1 iterations" in first.stdout
    results = json.loads((published / "results.json").read_text())
    summary = results["summary"]["HalfCheetahVel-v0"]
    assert set(summary["methods"]) == {"metasgd", "maml"} and list(summary["welch_vs_maml"]) == ["metasgd"]
    records = results["evaluations"]["HalfCheetahVel-v0"]
    assert set(records) == {"metasgd", "maml", "pretrained", "random-init"}
    assert len(records["metasgd"]["0"]["per_step"]) == 3 and "probe" in records["metasgd"]["0"]
    assert "probe" not in records["maml"]["0"]  # MAML's α is fixed: nothing to probe
    for name in ("metasgd-seed0", "maml-seed1", "pretrained-seed0", "random-init-seed0"):
        assert (published / "runs" / "HalfCheetahVel-v0" / name / "final.pt").is_file()
    text = (published / "results.md").read_text()
    assert "## Wall-clock" in text and "| HalfCheetahVel-v0 | pretrained + fine-tune (pretraining) | 1 |" in text
    wall = results["wall"]  # every run's iterations and the pretraining (metrics.csv), every evaluation (cache)
    curves = [published / "runs" / "HalfCheetahVel-v0" / f"{name}" / "metrics.csv"
              for name in ("metasgd-seed0", "metasgd-seed1", "maml-seed0", "maml-seed1", "pretrained-seed0")]
    seconds = sum(float(row["seconds"]) for path in curves for row in csv.DictReader(path.open()))
    assert wall["study_training_seconds"] == pytest.approx(seconds)
    assert wall["study_evaluation_seconds"] == pytest.approx(
        sum(r["seconds"] for by_seed in records.values() for r in by_seed.values()))
    assert wall["total"] >= wall["train"] + wall["study_evaluation_seconds"]  # this invocation evaluated them all
    # every compared row beside MAML's Figure 5 at its printed steps (0, 1; 3 is past --eval-steps 2), the random
    # init beside Figure 5's bound at steps 1 and 2; learn2learn's horizon-100 numbers are not compared
    standings = results["standings"]
    assert [(r["ours"], r["step"]) for r in standings] == [
        ("metasgd", 0), ("maml", 0), ("metasgd", 1), ("maml", 1), ("random-init", 1), ("random-init", 2)]
    for r in standings:  # each is our row's mean at that step
        cells = summary["methods"] if r["ours"] in summary["methods"] else \
            {"random-init": [[x, None] for x in records["random-init"]["0"]["per_step"]]}
        assert r["mean"] == cells[r["ours"]][r["step"]][0]
    # 10-step episodes return far less in magnitude than MAML's 200-step ones: above its ≈ −75 after one step
    assert [r["position"] for r in standings if r["step"] == 1 and r["ours"] != "random-init"] == ["above"] * 2
    assert "## Beside the papers" in (published / "results.md").read_text()

    # the same command again: nothing is trained again
    again = _script(*TINY, "--out", str(out))
    assert again.stdout.count("reused") == 5, again.stdout

    # the published checkpoints alone reproduce every evaluation, as `metasgd-rl evaluate` does
    _script(*TINY, "--out", str(published), "--evaluate-only", "--reevaluate")
    rerun = json.loads((published / "results.json").read_text())["evaluations"]["HalfCheetahVel-v0"]
    for method, by_seed in records.items():
        for seed, record in by_seed.items():
            assert rerun[method][seed]["per_step"] == record["per_step"]
    evaluated = tmp_path / "evaluate.json"
    subprocess.run([sys.executable, "-m", "metasgd_rl", "evaluate",
                    str(published / "runs" / "HalfCheetahVel-v0" / "metasgd-seed1" / "final.pt"), "--tasks", "2",
                    "--episodes", "2", "--steps", "2", "--seed", "2026", "--json", str(evaluated)],
                   check=True, capture_output=True, cwd=ROOT)
    cli = json.loads(evaluated.read_text())
    np.testing.assert_allclose(cli["mean"], records["metasgd"]["1"]["per_step"], rtol=0, atol=1e-9)

    # a report written mid-study: runs without final.pt are listed with their checkpoint, the rest reported
    (out / "runs" / "HalfCheetahVel-v0" / "maml-seed1" / "final.pt").unlink()
    (out / "runs" / "HalfCheetahVel-v0" / "pretrained-seed0" / "final.pt").unlink()
    partial = tmp_path / "partial"
    _script(*TINY, "--out", str(out), "--report-dir", str(partial), "--evaluate-only")
    midway = json.loads((partial / "results.json").read_text())
    assert midway["unfinished"] == ["HalfCheetahVel-v0 maml-seed1 (checkpoint at iteration 1)",
                                    "HalfCheetahVel-v0 pretrained-seed0 (checkpoint at iteration 1)"]
    assert set(midway["evaluations"]["HalfCheetahVel-v0"]["maml"]) == {"0"}
    assert "not evaluated yet: HalfCheetahVel-v0 maml-seed1" in (partial / "results.md").read_text()
    # with no run of the family finished there is nothing to compare: one line says which runs are missing
    for name in ("metasgd-seed0", "metasgd-seed1", "maml-seed0"):
        (out / "runs" / "HalfCheetahVel-v0" / name / "final.pt").unlink()
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--out", str(out), "--evaluate-only"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and "no run of HalfCheetahVel-v0 has its final.pt yet" in proc.stderr
