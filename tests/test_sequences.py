"""Sequence-prediction families: exact Bayes predictors against brute-force enumeration.

Each family's marginal likelihood P(x_1 .. x_n) is written here a second time, in
plain Python and by a different route from the package: Dirichlet integrals as
Gamma-function ratios, sums over every change-point configuration, every pattern
and every context tree.  P(x_t = k | x_<t) = P(x_<t k) / P(x_<t) must then match
``bayes_predict`` on every sequence of a short horizon to 1e-9.

Statistical tests compare sample counts with exact values and allow 4 standard
errors; seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch

from mesaprobe.baselines.predictors import BayesOptimalPredictor, OraclePredictor
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
from mesaprobe.envs.sequences import (
    IID,
    Drifting,
    Markov,
    Periodic,
    Streak,
    Switching,
    VariableOrderMarkov,
)
from mesaprobe.envs.sequences.drifting import DriftingConfig
from mesaprobe.envs.sequences.iid import IIDConfig
from mesaprobe.envs.sequences.markov import MarkovConfig
from mesaprobe.envs.sequences.periodic import PeriodicConfig
from mesaprobe.envs.sequences.streak import StreakConfig
from mesaprobe.envs.sequences.switching import SwitchingConfig
from mesaprobe.envs.sequences.vom import VariableOrderMarkovConfig
from mesaprobe.metrics import logloss_bits
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError, build, field_docs

SIGMAS = 4.0
FAMILIES = ("iid", "markov", "streak", "switching", "periodic", "vom", "drifting")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# Brute-force marginal likelihoods, independent of the package.  A sequence is a tuple of ints.
def concentration(prior_counts: tuple[float, ...], symbols: int) -> tuple[float, ...]:
    return prior_counts * symbols if len(prior_counts) == 1 else prior_counts


def dirichlet_multinomial(counts: list[int], alpha: tuple[float, ...]) -> float:
    """Probability of one particular sequence with these symbol counts: B(alpha + n) / B(alpha)."""
    log_value = math.lgamma(sum(alpha)) - math.lgamma(sum(alpha) + sum(counts))
    log_value += sum(math.lgamma(a + n) - math.lgamma(a) for a, n in zip(alpha, counts, strict=True))
    return math.exp(log_value)


def iid_marginal(config: IIDConfig, sequence: tuple[int, ...]) -> float:
    counts = [sequence.count(k) for k in range(config.symbols)]
    return dirichlet_multinomial(counts, concentration(config.prior_counts, config.symbols))


def markov_marginal(config: MarkovConfig, sequence: tuple[int, ...]) -> float:
    history = (0,) * config.order + sequence
    counts: dict[tuple[int, ...], list[int]] = {}
    for t, token in enumerate(sequence):
        counts.setdefault(history[t : t + config.order], [0] * config.symbols)[token] += 1
    alpha = concentration(config.prior_counts, config.symbols)
    return math.prod(dirichlet_multinomial(row, alpha) for row in counts.values())


def streak_marginal(config: StreakConfig, sequence: tuple[int, ...]) -> float:
    signs = {"sticky": [1], "fatigue": [-1], "either": [1, -1]}[config.mode]
    grid = [(w0, s * w1) for w0 in config.intercepts for s in signs for w1 in config.slopes]
    total = 0.0
    for intercept, slope in grid:
        probability = 1.0 / config.symbols if sequence else 1.0
        run = 1
        for previous, token in itertools.pairwise(sequence):
            keep = 1.0 / (1.0 + math.exp(-(intercept + slope * math.log(1 + run))))
            probability *= keep if token == previous else (1.0 - keep) / (config.symbols - 1)
            run = run + 1 if token == previous else 1
        total += probability / len(grid)
    return total


def segmentations(length: int):
    """(probability factor exponents, segments): every way to cut range(length) into segments."""
    for cuts in itertools.product((False, True), repeat=max(length - 1, 0)):
        starts = [0] + [t + 1 for t, cut in enumerate(cuts) if cut]
        bounds = [*starts, length]
        yield sum(cuts), len(cuts) - sum(cuts), list(itertools.pairwise(bounds))


def switching_marginal(config: SwitchingConfig, sequence: tuple[int, ...]) -> float:
    alpha = concentration(config.prior_counts, config.symbols)
    total = 0.0
    for changes, stays, segments in segmentations(len(sequence)):
        probability = config.hazard**changes * (1.0 - config.hazard) ** stays
        for start, end in segments:
            segment = sequence[start:end]
            probability *= dirichlet_multinomial([segment.count(k) for k in range(config.symbols)], alpha)
        total += probability
    return total


def periodic_marginal(config: PeriodicConfig, sequence: tuple[int, ...]) -> float:
    symbols, flip = config.symbols, config.flip_probability
    total = 0.0
    for period in range(1, config.max_period + 1):
        for pattern in itertools.product(range(symbols), repeat=period):
            probability = 1.0 / (config.max_period * symbols**period)
            for t, token in enumerate(sequence):
                probability *= 1.0 - flip if token == pattern[t % period] else flip / (symbols - 1)
            total += probability
    return total


def context_trees(context: tuple[int, ...], config: VariableOrderMarkovConfig):
    """(prior probability, leaf contexts) of every tree below ``context`` (most recent token first)."""
    if len(context) == config.depth:
        yield 1.0, [context]
        return
    yield config.leaf_probability, [context]
    children = [list(context_trees((*context, c), config)) for c in range(config.symbols)]
    for choice in itertools.product(*children):
        yield (
            (1.0 - config.leaf_probability) * math.prod(p for p, _ in choice),
            [leaf for _, leaves in choice for leaf in leaves],
        )


def vom_marginal(config: VariableOrderMarkovConfig, sequence: tuple[int, ...]) -> float:
    alpha = concentration(config.prior_counts, config.symbols)
    padded = (0,) * config.depth + sequence
    contexts = [tuple(reversed(padded[t : t + config.depth])) for t in range(len(sequence))]
    total = 0.0
    for prior, leaves in context_trees((), config):
        probability = prior
        for leaf in leaves:
            counts = [0] * config.symbols
            for context, token in zip(contexts, sequence, strict=True):
                if context[: len(leaf)] == leaf:
                    counts[token] += 1
            probability *= dirichlet_multinomial(counts, alpha)
        total += probability
    return total


MARGINALS = {
    IIDConfig: iid_marginal,
    MarkovConfig: markov_marginal,
    StreakConfig: streak_marginal,
    SwitchingConfig: switching_marginal,
    PeriodicConfig: periodic_marginal,
    VariableOrderMarkovConfig: vom_marginal,
}


def drifting_marginal(config: DriftingConfig, sequence: tuple[int, ...]) -> float:
    segment_configs = [config.component_config(name) for name in config.families]
    total = 0.0
    for changes, stays, segments in segmentations(len(sequence)):
        probability = config.hazard**changes * (1.0 - config.hazard) ** stays
        for start, end in segments:
            segment = sequence[start:end]
            probability *= sum(MARGINALS[type(c)](c, segment) for c in segment_configs) / len(segment_configs)
        total += probability
    return total


MARGINALS[DriftingConfig] = drifting_marginal

CASES = {
    "iid-uniform": IID(IIDConfig(horizon=6)),
    "iid-beta": IID(IIDConfig(horizon=6, prior_counts=(2.0, 0.3))),
    "iid-k3": IID(IIDConfig(symbols=3, horizon=4, prior_counts=(0.5, 1.0, 2.0))),
    "markov-order0": Markov(MarkovConfig(horizon=5, order=0, prior_counts=(0.5,))),
    "markov-order1": Markov(MarkovConfig(horizon=6, order=1, prior_counts=(1.0, 3.0))),
    "markov-order2": Markov(MarkovConfig(horizon=6, order=2, prior_counts=(0.5,))),
    "markov-k3": Markov(MarkovConfig(symbols=3, horizon=4, order=1)),
    "streak-sticky": Streak(StreakConfig(horizon=6)),
    "streak-fatigue-k3": Streak(StreakConfig(symbols=3, horizon=4, mode="fatigue")),
    "streak-either": Streak(StreakConfig(horizon=6, mode="either", intercepts=(0.5,), slopes=(0.3, 3.0))),
    "switching": Switching(SwitchingConfig(horizon=6, hazard=0.3)),
    "switching-never": Switching(SwitchingConfig(horizon=5, hazard=0.0, prior_counts=(0.5,))),
    "switching-always": Switching(SwitchingConfig(horizon=5, hazard=1.0, prior_counts=(2.0, 1.0))),
    "switching-k3": Switching(SwitchingConfig(symbols=3, horizon=4, hazard=0.2, prior_counts=(0.5,))),
    "periodic": Periodic(PeriodicConfig(horizon=6, max_period=3, flip_probability=0.1)),
    "periodic-noiseless": Periodic(PeriodicConfig(horizon=6, max_period=4, flip_probability=0.0)),
    "periodic-k3": Periodic(PeriodicConfig(symbols=3, horizon=4, max_period=2, flip_probability=0.2)),
    "vom-depth0": VariableOrderMarkov(VariableOrderMarkovConfig(horizon=5, depth=0)),
    "vom-depth2": VariableOrderMarkov(VariableOrderMarkovConfig(horizon=6, depth=2)),
    "vom-depth3": VariableOrderMarkov(
        VariableOrderMarkovConfig(horizon=6, depth=3, leaf_probability=0.3, prior_counts=(1.0, 0.5))
    ),
    "vom-full-tree": VariableOrderMarkov(VariableOrderMarkovConfig(horizon=5, depth=2, leaf_probability=0.0)),
    "vom-k3": VariableOrderMarkov(VariableOrderMarkovConfig(symbols=3, horizon=4, depth=2)),
    "drifting": Drifting(DriftingConfig(horizon=5, hazard=0.3, components={"periodic": {"max_period": 2}})),
    "drifting-streak-vom": Drifting(
        DriftingConfig(
            horizon=5,
            hazard=0.2,
            families=("streak", "vom"),
            components={"streak": {"intercepts": [0.0, 1.0], "slopes": [1.0]}, "vom": {"depth": 2}},
        )
    ),
    "drifting-k3": Drifting(
        DriftingConfig(
            symbols=3,
            horizon=4,
            hazard=0.25,
            families=("iid", "periodic"),
            components={"periodic": {"max_period": 2}},
        )
    ),
}


def all_sequences(symbols: int, horizon: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(symbols), repeat=horizon)), dtype=torch.long)


def sequence_probabilities(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B,) probability of each whole sequence under a predictive (B, T, K)."""
    return probs.gather(2, tokens[:, :, None]).squeeze(2).prod(dim=1)


@pytest.mark.parametrize("case", list(CASES))
def test_bayes_predict_matches_brute_force_enumeration(case):
    environment = CASES[case]
    config, symbols = environment.config, environment.symbols
    marginal = functools.cache(lambda prefix: MARGINALS[type(config)](config, prefix))
    tokens = all_sequences(symbols, config.horizon)
    probs = environment.bayes_predict(tokens)
    assert probs.shape == (len(tokens), config.horizon, symbols) and probs.dtype == torch.float64
    expected = torch.zeros_like(probs)
    for b, sequence in enumerate(tokens.tolist()):
        for t in range(config.horizon):
            history = tuple(sequence[:t])
            if marginal(history) > 0:  # otherwise impossible: the filter answers zeros
                expected[b, t] = torch.tensor(
                    [marginal((*history, k)) for k in range(symbols)], dtype=torch.float64
                ) / marginal(history)
    assert torch.allclose(probs, expected, rtol=0, atol=1e-9), (probs - expected).abs().max()
    # The predictives chain into a distribution over all K^T sequences.
    assert abs(sequence_probabilities(probs, tokens).sum().item() - 1.0) < 1e-12


@pytest.mark.parametrize("name", FAMILIES)
def test_sampled_sequences_follow_the_bayes_marginal(name):
    """The sampler's task prior is the one the Bayes predictor assumes: frequencies of every
    sequence of length 4 match its Bayes probability within 4 sigma."""
    cls = ENVIRONMENTS.get(name)
    settings = {
        "switching": {"hazard": 0.3},
        "periodic": {"max_period": 3},
        "drifting": {"hazard": 0.3, "families": ("iid", "streak", "periodic", "vom")},
    }.get(name, {})
    environment = cls(cls.Config(horizon=4, **settings))
    episodes = 50_000
    generator = make_generator("sequences", name)
    tokens = environment.sample(environment.sample_tasks(episodes, generator, "cpu"), generator)
    sequences = all_sequences(2, 4)
    probability = sequence_probabilities(environment.bayes_predict(sequences), sequences)
    codes = tokens @ torch.tensor([8, 4, 2, 1])
    counts = torch.bincount(codes, minlength=16).to(torch.float64)
    expected = episodes * probability
    sigma = (episodes * probability * (1 - probability)).sqrt()
    assert ((counts - expected).abs() <= SIGMAS * sigma).all(), (counts, expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_oracle_beats_bayes_beats_a_fixed_guess_on_average(name):
    cls = ENVIRONMENTS.get(name)
    environment = cls(cls.Config(horizon=40))
    generator = make_generator("logloss", name)
    tasks = environment.sample_tasks(1000, generator, "cpu")
    tokens = environment.sample(tasks, generator)
    bayes = logloss_bits(BayesOptimalPredictor().predict(environment, tasks, tokens), tokens).sum(dim=1)
    oracle = logloss_bits(OraclePredictor().predict(environment, tasks, tokens), tokens).sum(dim=1)
    fixed = torch.full((1000,), 40 * math.log2(environment.symbols), dtype=torch.float64)
    for better, worse in ((oracle, bayes), (bayes, fixed)):
        gap = worse - better
        assert gap.mean() > SIGMAS * gap.std() / math.sqrt(len(gap)), (gap.mean(), gap.std())


def test_switching_is_drifting_with_one_iid_family():
    switching = Switching(SwitchingConfig(horizon=30, hazard=0.1, prior_counts=(0.7, 1.3)))
    drifting = Drifting(
        DriftingConfig(
            horizon=30, hazard=0.1, families=("iid",), components={"iid": {"prior_counts": [0.7, 1.3]}}
        )
    )
    generator = make_generator("switching-drifting")
    tokens = switching.sample(switching.sample_tasks(50, generator, "cpu"), generator)
    assert torch.allclose(switching.bayes_predict(tokens), drifting.bayes_predict(tokens), rtol=0, atol=1e-12)


def test_oracle_knows_the_task():
    generator = make_generator("oracle")
    iid = IID(IIDConfig(horizon=5))
    tasks = iid.sample_tasks(3, generator, "cpu")
    tokens = iid.sample(tasks, generator)
    assert torch.equal(iid.oracle_predict(tasks, tokens), tasks.probs[:, None, :].expand(3, 5, 2))
    periodic = Periodic(PeriodicConfig(horizon=7, max_period=3, flip_probability=0.0))
    tasks = periodic.sample_tasks(20, generator, "cpu")
    tokens = periodic.sample(tasks, generator)
    phases = torch.arange(7)[None, :] % tasks.period[:, None]
    assert torch.equal(tokens, tasks.pattern.gather(1, phases))  # noiseless: the pattern itself
    assert torch.equal(periodic.oracle_predict(tasks, tokens).argmax(dim=2), tokens)


def test_observation_is_previous_token_and_time():
    environment = Markov(MarkovConfig(symbols=3, horizon=4))
    tokens = torch.tensor([[2, 0, 1, 1]])
    observation = environment.observation(tokens)
    assert environment.observation_size == 4 and observation.shape == (1, 4, 4)
    assert torch.equal(
        observation[0, :, :3], torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]).float()
    )
    assert torch.equal(observation[0, :, 3], torch.tensor([0.0, 0.25, 0.5, 0.75]))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_keeps_the_contract(name):
    cls = ENVIRONMENTS.get(name)
    assert cls.kind == "prediction" and cls.registered_name == name
    docs = field_docs(cls.Config)
    assert set(docs) == {field for field in cls.Config.__dataclass_fields__}, "every setting is documented"
    environment = cls(cls.Config(horizon=7))
    generator = make_generator("contract", name)
    tasks = environment.sample_tasks(4, generator, "cpu")
    tokens = environment.sample(tasks, generator)
    assert tokens.shape == (4, 7) and tokens.dtype == torch.long
    assert ((tokens >= 0) & (tokens < environment.symbols)).all()
    for probs in (environment.bayes_predict(tokens), environment.oracle_predict(tasks, tokens)):
        assert probs.shape == (4, 7, environment.symbols)
        assert torch.allclose(probs.sum(dim=2), torch.ones(4, 7, dtype=torch.float64))
    assert environment.observation(tokens).shape == (4, 7, environment.observation_size)
    again = make_generator("contract", name)
    assert torch.equal(environment.sample(environment.sample_tasks(4, again, "cpu"), again), tokens)


def test_predictors_and_logloss():
    probs = torch.tensor([[[0.5, 0.5], [0.25, 0.75]]], dtype=torch.float64)
    assert torch.allclose(
        logloss_bits(probs, torch.tensor([[0, 0]])), torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    )
    assert BayesOptimalPredictor.serves == ("prediction",)
    assert OraclePredictor.serves == ("prediction", "regression")
    for cls in (BayesOptimalPredictor, OraclePredictor):
        with pytest.raises(ValueError, match="prediction"):
            cls(cls.Config(), BernoulliBandit(BernoulliBanditConfig()))


@pytest.mark.parametrize(
    "config_class,settings,key",
    [
        (IIDConfig, {"symbols": 1}, "symbols"),
        (IIDConfig, {"horizon": 0}, "horizon"),
        (IIDConfig, {"prior_counts": (1.0, 0.0)}, "prior_counts"),
        (IIDConfig, {"prior_counts": (1.0, 1.0, 1.0)}, "prior_counts"),
        (MarkovConfig, {"order": -1}, "order"),
        (MarkovConfig, {"order": 13}, "order"),
        (StreakConfig, {"slopes": (-1.0,)}, "slopes"),
        (StreakConfig, {"mode": "grumpy"}, "mode"),
        (StreakConfig, {"intercepts": ()}, "intercepts"),
        (StreakConfig, {"intercepts": (0.0, 0.0)}, "intercepts"),
        (SwitchingConfig, {"hazard": 1.5}, "hazard"),
        (PeriodicConfig, {"max_period": 0}, "max_period"),
        (PeriodicConfig, {"max_period": 33}, "max_period"),
        (PeriodicConfig, {"flip_probability": -0.1}, "flip_probability"),
        (VariableOrderMarkovConfig, {"depth": 11}, "depth"),
        (VariableOrderMarkovConfig, {"leaf_probability": 2.0}, "leaf_probability"),
        (DriftingConfig, {"families": ()}, "families"),
        (DriftingConfig, {"families": ("iid", "switching")}, "families"),
        (DriftingConfig, {"families": ("iid", "iid")}, "families"),
        (DriftingConfig, {"components": {"vom": {"depth": 2}}}, "components.vom"),
        (DriftingConfig, {"components": {"markov": {"ordr": 2}}}, "components.markov.ordr"),
        (DriftingConfig, {"components": {"markov": {"order": -2}}}, "components.markov.order"),
        (DriftingConfig, {"components": {"markov": {"horizon": 9}}}, "components.markov.horizon"),
        (DriftingConfig, {"components": [1]}, "components"),
    ],
)
def test_configs_reject_bad_settings_naming_the_key(config_class, settings, key):
    with pytest.raises(SettingError) as error:
        config_class(**settings).validate()
    assert error.value.key == key


def test_settings_build_from_a_study_mapping():
    config = build(
        DriftingConfig,
        {"family": "drifting", "families": ["markov", "vom"], "components": {"markov": {"order": 2}}},
        key="environments.drift",
        file="study.yaml",
        drop=("family",),
    )
    environment = Drifting(config)
    assert environment.segment_families[0].config.order == 2
    assert environment.segment_families[1].config == VariableOrderMarkovConfig()
