"""The fitted-learner probe: which inner learning algorithm a frozen agent's choices follow.

The agent (a frozen model, or a baseline such as Thompson sampling) plays ``episodes``
held-out bandit tasks.  Learning models are then fitted to its choices by maximum
likelihood: the probability of every choice given the actions and rewards of the same
episode before it (the first choice of an episode counts too).  The fits add a weak prior
on the unconstrained parameters (:data:`~mesaprobe.probes.learner_fitting.RAW_PRIOR_SD`)
that only matters where the choices leave a parameter undetermined.  The models (:data:`MODELS`):

* ``q_learning``: Q-learning with a decaying learning rate, and ``q_learning_constant``,
  the same with one learning rate (:mod:`mesaprobe.probes.learner_q_learning`);
* ``thompson``: Thompson sampling with an evidence scale and a lapse
  (:mod:`mesaprobe.probes.learner_thompson`).

Every fit also has its ``choice_surprisal_bits``: -log2 likelihood per choice, lower
fits better, log2(K) for a uniform guess.  ``learning_rate`` rows give q_learning's
alpha_n at n = 1..max_pulls, and Bayes' 1 / (n + a + b) as the reference (target
``bayes``, written for independent Beta priors only).  Dependent priors (arms paying p
and 1 - p) have no per-arm Beta posterior: there Q starts at 1/2, every arm's prior
mean, and the Thompson model uses Beta(1, 1) per arm, as the Thompson baseline does.

Replicates.  Replicate 0 fits all episodes; replicates 1..R refit on episode-bootstrap
resamples (:func:`mesaprobe.probes.inside.episode_bootstrap_weights`, named by the
held-out key, so replicate r resamples the same episodes for every agent at one seed).
All replicates are one optimisation (:func:`~mesaprobe.probes.learner_fitting.fit_model`).

Speed.  Measured with the defaults (1000 episodes of 100 pulls, 100 replicates, all three
models) on one thread of a shared, busy 2-core machine: 15 to 20 s for the Thompson, greedy
and Gittins baselines (q_learning 7-12 s of it); 45 to 60 s for an untrained GRU, whose
choices ignore its history, so that the likelihood is flat in several directions and the
batch runs to its iteration cap.

Sanity checks (same sizes): the Thompson baseline's fitted evidence scale is 1.00 (bootstrap
standard deviation 0.01) with lapse 0, and the thompson model fits it better than
q_learning (0.40 against 0.42 bits per choice); the greedy baseline, greedy on Bayes'
posterior mean, gets q_learning's alpha_n = 1 / (n + 2) to 0.001.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import polars as pl
import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.probes.adaptation import heldout_streams
from mesaprobe.probes.inside import InsideProbe, episode_bootstrap_weights, rows_frame
from mesaprobe.probes.learner_choices import Choices
from mesaprobe.probes.learner_fitting import Fit, fit_model
from mesaprobe.probes.learner_q_learning import QLearningModel, bayes_learning_rates
from mesaprobe.probes.learner_thompson import ThompsonModel
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError
from mesaprobe.train.rollout import play

ModelName = Literal["q_learning", "q_learning_constant", "thompson"]
MODELS: tuple[str, ...] = ("q_learning", "q_learning_constant", "thompson")


@dataclass(frozen=True)
class FittedLearnerConfig:
    episodes: int = 1000
    """Held-out tasks played, one episode each; every choice of every episode is fitted."""
    replicates: int = 100
    """Episode-bootstrap replicates computed per seed (the interval of the study's summary):
    each is a refit on a resample of the episodes."""
    max_pulls: int | None = None
    """learning_rate rows are written for pull counts n = 1..max_pulls (default: the horizon)."""
    batch: int = 1000
    """Episodes played at once (a memory bound)."""
    models: tuple[ModelName, ...] = MODELS
    """Learning models fitted to the choices: q_learning (decaying learning rate),
    q_learning_constant (one learning rate), thompson (Thompson sampling with an evidence
    scale and a lapse)."""
    policy: Literal["sample", "greedy"] = "sample"
    """How a trained model picks actions: sample from its policy, or take the most likely."""

    def validate(self) -> None:
        for name in ("episodes", "batch"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.replicates < 0:
            raise SettingError("replicates", f"expected a non-negative integer, got {self.replicates}")
        if self.max_pulls is not None and self.max_pulls < 1:
            raise SettingError("max_pulls", f"expected a positive integer, got {self.max_pulls}")
        models = list(self.models)
        if not models or len(set(models)) != len(models) or not set(models) <= set(MODELS):
            raise SettingError("models", f"expected distinct models among {', '.join(MODELS)}, got {models}")


# --------------------------------------------------------------------------------------
# The probe


def prior_of(environment: Environment) -> tuple[float, float]:
    """(a, b) of each arm's Beta prior: the environment's independent prior, else Beta(1, 1)."""
    return getattr(environment, "prior", None) or (1.0, 1.0)


def play_choices(
    agent, environment: Environment, episodes: int, batch: int, heldout_key: tuple, agent_key: tuple, device
) -> Choices:
    """The agent plays ``episodes`` held-out tasks (in batches); its actions and rewards on CPU."""
    task_generator, luck_generator, action_generator = heldout_streams(heldout_key, agent_key, device)
    actions, rewards = [], []
    with torch.inference_mode():
        for start in range(0, episodes, batch):
            tasks = environment.sample_tasks(min(batch, episodes - start), task_generator, device)
            trajectory = play(environment, tasks, agent, luck_generator, action_generator)
            actions.append(trajectory.actions.cpu())
            rewards.append(trajectory.rewards.cpu())
    # Concatenated outside inference mode: ordinary tensors, which the fits may differentiate through.
    return Choices(
        actions=torch.cat(actions),
        rewards=torch.cat(rewards).to(torch.float64),
        arms=environment.action_count,
    )


def build_model_of(name: str, choices: Choices, prior: tuple[float, float]):
    """The learning model ``name`` (one of MODELS) ready to be fitted to ``choices``."""
    a, b = prior
    if name == "q_learning":
        return QLearningModel(choices, a / (a + b), decaying=True)
    if name == "q_learning_constant":
        return QLearningModel(choices, a / (a + b), decaying=False)
    if name == "thompson":
        return ThompsonModel(choices, prior)
    raise ValueError(f"unknown learning model {name!r}; known: {', '.join(MODELS)}")


def fitted_rows(
    choices: Choices,
    weights: Tensor,
    models: tuple[str, ...],
    prior: tuple[float, float],
    max_pulls: int,
    bayes_reference: bool,
) -> tuple[pl.DataFrame, dict[str, Fit]]:
    """Inside rows of every model fitted to ``choices`` under episode ``weights`` (R + 1, E)."""
    frames, fits = [], {}
    pulls = list(range(1, max_pulls + 1))
    for name in models:
        model = build_model_of(name, choices, prior)
        fit = fit_model(model, weights)
        fits[name] = fit
        frames.append(rows_frame("choice_surprisal_bits", fit.surprisal_bits[:, None], [0], target=name))
        if name == "q_learning_constant":
            continue  # its parameters share q_learning's names: only its fit is written
        for parameter, values in model.natural(fit.raw).items():
            frames.append(rows_frame("fitted_parameter", values[:, None], [0], target=parameter))
        if name == "q_learning":
            frames.append(
                rows_frame(
                    "learning_rate", model.learning_rates(fit.raw, max_pulls), pulls, target="q_learning"
                )
            )
    if bayes_reference:
        bayes = bayes_learning_rates(prior, max_pulls).expand(weights.shape[0], -1)
        frames.append(rows_frame("learning_rate", bayes, pulls, target="bayes"))
    return pl.concat(frames), fits


class FittedLearnerProbe(InsideProbe):
    """Learning models fitted by maximum likelihood to a frozen agent's choices: the fitted
    Q-learning learning rate per pull against Bayes', and how well each model predicts the choices."""

    Config: ClassVar[type] = FittedLearnerConfig
    serves: ClassVar[tuple[str, ...]] = ("bandit",)
    charts: ClassVar[tuple[str, ...]] = ("learning_rate", "choice_surprisal_bits")
    task: ClassVar[str] = "fitted-learner probe fits learning models to bandit choices"

    @property
    def policy(self) -> Literal["sample", "greedy"]:
        return self.config.policy

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
        untrained=None,
    ) -> pl.DataFrame:
        """Inside rows (:data:`mesaprobe.probes.inside.INSIDE_ROW_COLUMNS`) of learning_rate,
        fitted_parameter and choice_surprisal_bits.

        The agent plays on ``device``; the fits run on the CPU in float64.  ``untrained`` is
        not used: Bayes' learning rate and the baselines are this probe's references.
        """
        config = self.config
        choices = play_choices(
            agent, environment, config.episodes, config.batch, heldout_key, agent_key, device
        )
        weights = episode_bootstrap_weights(
            config.episodes, config.replicates, make_generator("fitted-learner-bootstrap", *heldout_key)
        )  # (R + 1, E)
        independent_prior = getattr(environment, "prior", None)
        rows, _ = fitted_rows(
            choices,
            weights,
            tuple(config.models),
            prior_of(environment),
            config.max_pulls or environment.horizon,
            bayes_reference=independent_prior is not None,
        )
        return rows
