"""The commitment game: exact function tables, the adversary's odds, reference policies,
private inputs that a Transformer cannot attend to, and a whole study through every job."""

from __future__ import annotations

import itertools
import math

import polars as pl
import pytest
import torch

from mesaprobe.baselines import build_baseline
from mesaprobe.envs.commitment import (
    FUNCTIONS,
    Commitment,
    CommitmentConfig,
    bits_of,
    codes_of,
    function_table,
    gf2_rank,
)
from mesaprobe.metrics import surprisal_bits
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.probes.commitment import CommitmentProbe, CommitmentProbeConfig
from mesaprobe.settings import SettingError
from tests.conftest import run_all_jobs


def span_size(matrix: torch.Tensor) -> int:
    """Number of distinct GF(2) combinations of the rows, by enumeration."""
    rows = matrix.shape[0]
    combos = {
        tuple(((torch.tensor(c) @ matrix) % 2).tolist()) for c in itertools.product([0, 1], repeat=rows)
    }
    return len(combos)


def test_gf2_rank_matches_brute_force_span() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        matrix = torch.randint(0, 2, (4, 5), generator=generator)
        assert 2 ** gf2_rank(matrix) == span_size(matrix)


def test_bits_and_codes_round_trip() -> None:
    codes = torch.arange(32)
    assert torch.equal(codes_of(bits_of(codes, 5)), codes)
    assert bits_of(torch.tensor(6), 4).tolist() == [0, 1, 1, 0]  # most significant first


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_function_tables(bits: int) -> None:
    size = 2**bits
    table = {name: function_table(CommitmentConfig(bits=bits, function=name)) for name in FUNCTIONS}
    for name, values in table.items():
        assert values.shape == (size,) and int(values.min()) >= 0 and int(values.max()) < size, name
    assert torch.equal(table["identity"], torch.arange(size))
    for one_to_one in ("identity", "xor_mask", "modmul"):
        assert sorted(table[one_to_one].tolist()) == list(range(size)), one_to_one
    mask = int(table["xor_mask"][0])
    assert mask != 0 and torch.equal(table["xor_mask"], torch.arange(size) ^ mask)
    multiplier = int(table["modmul"][1])
    assert multiplier % 2 == 1 and torch.equal(table["modmul"], (torch.arange(size) * multiplier) % size)
    # gf2_linear: linear over GF(2), every image point has 2^(n - rank) preimages.
    linear = table["gf2_linear"]
    for a, b in itertools.product(range(size), repeat=2):
        assert int(linear[a ^ b]) == int(linear[a]) ^ int(linear[b])
    counts = torch.bincount(linear, minlength=size)
    assert set(counts[counts > 0].tolist()) == {2}  # default rank n - 1
    # discrete_exp: g^z mod p, p the largest prime below 2^n.
    p = max(q for q in range(2, size) if all(q % d for d in range(2, q)))
    g = int(table["discrete_exp"][1])
    assert all(int(table["discrete_exp"][z]) == pow(g, z % (p - 1), p) for z in range(size))
    assert len(set(table["discrete_exp"][: p - 1].tolist())) == p - 1  # g generates the group


def test_gf2_linear_rank_setting() -> None:
    table = function_table(CommitmentConfig(bits=5, function="gf2_linear", rank=2))
    counts = torch.bincount(table, minlength=32)
    assert set(counts[counts > 0].tolist()) == {8}


def test_function_tables_are_fixed_by_their_seed() -> None:
    first = function_table(CommitmentConfig(bits=5, function="random_table"))
    assert torch.equal(first, function_table(CommitmentConfig(bits=5, function="random_table")))
    other = function_table(CommitmentConfig(bits=5, function="random_table", function_seed=1))
    assert not torch.equal(first, other)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"bits": 0}, "bits"),
        ({"function": "sha256"}, "function"),
        ({"rank": 2}, "rank"),
        ({"function": "gf2_linear", "rank": 5}, "rank"),
        ({"noise": "none", "noise_bits": 3}, "noise_bits"),
        ({"penalty": -1.0}, "penalty"),
        ({"guess": 3}, "guess"),
        ({"adversary": "fixed", "guess": 16}, "guess"),
    ],
)
def test_bad_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(SettingError) as error:
        CommitmentConfig(**settings).validate()
    assert error.value.key == key


def outcome_of(environment: Commitment, y: list[int], z: list[int]):
    n = environment.bits
    actions = torch.cat([bits_of(torch.tensor(y), n), bits_of(torch.tensor(z), n)], dim=1)
    return environment.outcome(actions)


def test_adversaries_by_hand() -> None:
    marginal = Commitment(CommitmentConfig(bits=2, function="identity"))
    # z = 3, 3, 1, 2 (y = z: all succeed).  The first episode's z appears once among
    # the three others: guessed with probability 1/3; the third's never.
    outcome = outcome_of(marginal, [3, 3, 1, 2], [3, 3, 1, 2])
    assert outcome.success.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert outcome.guessed.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])
    chance = 1 / 4
    expected = [1 - (1 / 3 - chance) / (1 - chance)] * 2 + [1 + chance / (1 - chance)] * 2
    assert outcome.reward.tolist() == pytest.approx(expected)
    # Conditional: among other episodes with the same y.  y = 0, 0, 0, 1 with z = 2, 2, 1, 3:
    # episode 0 sees z = 2, 1 (1/2); episode 2 sees 2, 2 (0); episode 3 has no other y = 1 (uniform).
    conditional = Commitment(CommitmentConfig(bits=2, function="identity", adversary="conditional"))
    outcome = outcome_of(conditional, [0, 0, 0, 1], [2, 2, 1, 3])
    assert outcome.success.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert outcome.guessed.tolist() == pytest.approx([0.5, 0.5, 0.0, chance])
    fixed = Commitment(CommitmentConfig(bits=2, function="identity", adversary="fixed", guess=1, penalty=2.0))
    outcome = outcome_of(fixed, [1, 2], [1, 2])
    assert outcome.reward.tolist() == pytest.approx([1 - 2.0, 1 + 2.0 * chance / (1 - chance)])


def test_surprisal_mean_is_the_plug_in_entropy() -> None:
    codes = torch.tensor([0, 0, 1, 2])
    entropy = -(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25))
    assert float(surprisal_bits(codes).mean()) == pytest.approx(entropy)


def play_baseline(name: str, config: CommitmentConfig, episodes: int = 4000) -> dict[str, float]:
    environment = Commitment(config)
    agent = build_baseline(name, None, environment)
    probe = CommitmentProbe(CommitmentProbeConfig(episodes=episodes, batch=1000))
    rows = probe.run(agent, environment, heldout_key=("test", 0), agent_key=(name,))
    assert rows["step"].unique().to_list() == [1]
    return dict(rows.group_by("metric").agg(pl.col("value").mean()).iter_rows())


@pytest.mark.parametrize("function", ["identity", "gf2_linear", "random_table", "discrete_exp"])
def test_reference_policies(function: str) -> None:
    bits, penalty = 4, 0.5
    config = CommitmentConfig(bits=bits, function=function, penalty=penalty)
    optimal = play_baseline("commit_optimal", config)
    assert optimal["success"] == 1.0
    # Plug-in entropy of 4000 uniform draws of 16 values: bias about -(16 - 1) / (2 N ln 2) = -0.003.
    assert optimal["z_surprisal_bits"] == pytest.approx(bits, abs=0.02)
    # Reward: 1 - penalty * (a - 1/16) / (15/16), a the frequency of z among the 999 other
    # episodes of its batch: sd of a is about sqrt(1/16 * 15/16 / 999) = 0.0077 per
    # episode, 0.0077 * 0.5 * 16/15 / sqrt(4000) = 0.0001 for the mean; 5 sigma is 0.0005
    # (episodes of a batch are dependent; a bound of 0.005 leaves room for that).
    assert optimal["game_reward"] == pytest.approx(1.0, abs=0.005)
    constant = play_baseline("commit_deterministic", config)
    assert constant == {"success": 1.0, "game_reward": 1.0 - penalty, "z_surprisal_bits": 0.0}
    fixed = play_baseline(
        "commit_deterministic", CommitmentConfig(bits=bits, function=function, adversary="fixed")
    )
    assert fixed["game_reward"] == pytest.approx(1.0 + 1.0 / (2**bits - 1))


@pytest.mark.parametrize("family", ["gru", "lstm", "transformer", "memoryless"])
def test_private_inputs_reach_a_transformer_at_their_own_step_only(family: str) -> None:
    torch.manual_seed(0)
    config = ARCHITECTURES.get(family).Config()
    model = build_model(family, config, input_size=7, output_size=3, private_size=3).eval()
    xs = torch.randn(2, 5, 7)
    changed = xs.clone()
    changed[:, 1, 4:] += 1.0  # private columns of step 2 only
    with torch.no_grad():
        before, after = model(xs), model(changed)
        state, outputs = model.initial_state(2, 5, "cpu"), []
        for t in range(5):
            state, y = model.step(state, xs[:, t])
            outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, dim=1), before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(before[:, 0], after[:, 0])  # causal for every model
    assert not torch.allclose(before[:, 1], after[:, 1])  # the step that got them
    later_unchanged = torch.allclose(before[:, 2:], after[:, 2:])
    assert later_unchanged == (family in ("transformer", "memoryless"))


def test_transformer_without_private_inputs_keeps_a_linear_head() -> None:
    model = build_model("transformer", ARCHITECTURES.get("transformer").Config(), 7, 3)
    assert isinstance(model.head, torch.nn.Linear)
    assert model.embed.in_features == 7


COMMITMENT_STUDY = """\
study: tiny_commitment
seeds: [0]
environments:
  private: {family: commitment, bits: 2, function: xor_mask, noise: private}
  history: {family: commitment, bits: 2, function: xor_mask, noise: history}
architectures:
  gru: {family: gru, hidden: 8}
  transformer: {family: transformer, d_model: 8, layers: 1, heads: 2}
training: {env_steps: 256, batch: 16, gamma: 1.0}
probes:
  sampled: {kind: commitment, episodes: 40, batch: 20}
baselines: [commit_optimal, commit_deterministic]
"""


def test_a_commitment_study_runs_every_job(tmp_path) -> None:
    from mesaprobe import jobs
    from mesaprobe.analysis.charts import make_charts
    from mesaprobe.frozen import load_frozen
    from mesaprobe.study import load_study, make_plan
    from mesaprobe.study.outputs import chart_outputs

    spec = tmp_path / "commitment.yaml"
    spec.write_text(COMMITMENT_STUDY)
    plan = make_plan(load_study(spec))
    results = tmp_path / "results" / plan.study.name
    written = run_all_jobs(plan, results, resamples=50)
    transformer = next(run for run in plan.runs if run.id.startswith("private-transformer"))
    frozen = load_frozen(results / transformer.directory / jobs.FROZEN_MANIFEST)
    assert frozen.manifest.private_size == 2 and frozen.model.private_size == 2
    summary = pl.read_parquet(written["summary"])
    assert set(summary["metric"]) == {"success", "game_reward", "z_surprisal_bits"}
    optimal = summary.filter((pl.col("agent") == "commit_optimal") & (pl.col("metric") == "success"))
    assert optimal["mean"].to_list() == [1.0, 1.0]
    files = make_charts(results / "tables", results / "charts", chart_outputs(plan.study))
    expected = [name for chart in chart_outputs(plan.study) for name in chart.files]
    assert [path.name for path in files] == expected
    assert "overview_commitment_sampled.html" in expected
