"""The α probe: adaptations with the hidden layers' α reset, on the same tasks and episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasgd_rl import MAML, MetaSGD, alpha_probe
from metasgd_rl.cli import main
from metasgd_rl.probe import hidden_layer_names, replaced_alpha
from tests.test_cli import two_runs  # noqa: F401  (fixture)


def model(**kwargs) -> MetaSGD:
    defaults = dict(policy_kwargs=dict(hidden_sizes=(8, 8)), meta_batch_size=2, episodes_per_task=3, seed=0)
    return MetaSGD("Navigation2D-v0", **{**defaults, **kwargs})


def test_the_hidden_layers_are_every_layer_but_the_output():
    assert hidden_layer_names(model()) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert hidden_layer_names(model(policy_kwargs=dict(hidden_sizes=()))) == []


def test_hidden_alpha_zero_adapts_only_the_output_layer_and_log_std():
    m = model()
    tasks = m.family.sample_tasks(3, np.random.default_rng(0))
    seeds = np.random.SeedSequence(1).spawn(1)
    with replaced_alpha(m, dict.fromkeys(hidden_layer_names(m), 0.0)) as probed:
        adapted, _ = probed.adapt_tasks(tasks, 3, seeds)
    theta = m.policy.adaptable_parameters()
    for name, p in adapted.items():
        unchanged = torch.equal(p, theta[name].detach().expand_as(p))
        assert unchanged == (name in hidden_layer_names(m)), name


def test_probe_variants_equal_the_learned_one_exactly_when_alpha_agrees():
    """Common random numbers: a fresh model's α is α_init everywhere, so "reset to α_init" is the same
    adaptation, episode for episode; a model whose hidden α are 0 gives the "set to 0" numbers."""
    m = model()
    probe = alpha_probe(m, n_tasks=3, episodes=3, seed=4)
    np.testing.assert_array_equal(probe.returns["learned"], probe.returns["hidden_init"])
    assert not np.array_equal(probe.returns["learned"], probe.returns["hidden_zero"])
    with torch.no_grad():
        for name in hidden_layer_names(m):
            m.step_sizes.alphas[name.replace(".", "__")].zero_()
    zeroed = alpha_probe(m, n_tasks=3, episodes=3, seed=4)
    np.testing.assert_array_equal(zeroed.returns["learned"], zeroed.returns["hidden_zero"])
    np.testing.assert_array_equal(zeroed.returns["hidden_init"], probe.returns["learned"])
    assert probe.difference("hidden_init") == (0.0, 0.0)


@pytest.mark.parametrize("kwargs", [dict(alpha_parameterization="log"),
                                    dict(inner_steps=2, alpha_per_step=True, alpha_granularity="tensor")])
def test_the_probe_keeps_each_steps_learned_alpha_and_leaves_the_model_alone(kwargs):
    m = model(**kwargs)
    with torch.no_grad():
        for k, a in m.step_sizes.alphas.items():
            a.add_(0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(len(k))))
    state = {k: v.clone() for k, v in m.step_sizes.state_dict().items()}
    sizes = m.step_sizes
    with replaced_alpha(m, {"layers.0.bias": 0.5}) as probed:
        for k in range(sizes.num_steps):
            for name, alpha in sizes.for_step(k).items():
                expected = torch.full_like(alpha, 0.5) if name == "layers.0.bias" else alpha
                torch.testing.assert_close(probed.step_sizes.for_step(k)[name], expected.expand_as(
                    probed.step_sizes.for_step(k)[name]))
    assert m.step_sizes is sizes
    alpha_probe(m, n_tasks=2, episodes=2, steps=sizes.num_steps)
    assert all(torch.equal(v, m.step_sizes.state_dict()[k]) for k, v in state.items())


def test_maml_gets_a_probe_too():
    probe = alpha_probe(MAML("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), episodes_per_task=2),
                        n_tasks=2, episodes=2)
    assert set(probe.returns) == {"learned", "hidden_init", "hidden_zero"} and probe.alpha_init == 0.1
    assert "hidden layers' α = 0" in probe.table()


def test_evaluate_prints_the_probe_and_the_report_shows_it(tmp_path, two_runs, capsys):  # noqa: F811
    argv = ["evaluate", str(two_runs[0] / "final.pt"), "--tasks", "2", "--steps", "1", "--episodes", "2",
            "--alpha-probe", "--report", str(tmp_path / "rep")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "α probe (α_init 0.1; hidden layers: layers.0.weight, layers.0.bias)" in out
    assert "| hidden layers' α = α_init (0.1) |" in out and "| hidden layers' α = 0 |" in out
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| hidden layers' α = 0 |" in report and "Does the adaptation use the hidden layers' α?" in report
