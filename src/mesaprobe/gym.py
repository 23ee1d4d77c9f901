"""Every environment family as a Gymnasium environment, and frozen runs as policies for them.

Importing this module registers each family of :data:`mesaprobe.envs.ENVIRONMENTS` with
Gymnasium's registry as ``mesaprobe/<Family>-v0`` (the registry name in CamelCase:
``bernoulli_bandit`` is ``mesaprobe/BernoulliBandit-v0``, ``linear_regression``
``mesaprobe/LinearRegression-v0``, ``iid`` ``mesaprobe/Iid-v0``), by explicit
``gymnasium.register`` calls: Gymnasium 1.x reads no plugin entry points, so either import
the module or name it in the id, which makes Gymnasium import it::

    import gymnasium
    import mesaprobe.gym

    env = gymnasium.make("mesaprobe/BernoulliBandit-v0", arms=5, horizon=100)
    envs = gymnasium.make_vec("mesaprobe/BernoulliBandit-v0", num_envs=64, arms=5, horizon=100)
    env = gymnasium.make("mesaprobe.gym:mesaprobe/Markov-v0", horizon=50)  # no import needed

Keyword arguments are the family's settings (``mesaprobe list environments <family>``),
checked as a study's are.  Every episode is a fresh task from the family's prior, drawn
with a torch generator seeded from Gymnasium's ``np_random`` (so ``reset(seed=...)``
repeats episodes exactly).  ``make`` gives :class:`MesaprobeEnv` (one episode at a time);
``make_vec`` gives :class:`MesaprobeVectorEnv`, which plays ``num_envs`` episodes as one
batch of the family's tensors (not a loop over copies): every episode of a batch has the
family's fixed horizon, so all end on the same step and reset together on the next one
(Gymnasium's next-step autoreset).

What an action is, per environment kind (``Environment.kind``):

* ``bandit``: ``Discrete(arms)``, the arm pulled; the observation is the RL^2 input the
  models see (one-hot previous arm, previous reward, time fraction); the reward is the
  Bernoulli payout; ``info["regret"]`` is the best arm's expected reward minus the pulled
  arm's.
* ``commitment``: ``Discrete(2)``, the bit emitted; the reward comes at the last step.  Its
  adversary guesses z from the *other* episodes of the batch, so a lone episode (``make``)
  has none and pays no penalty in expectation; ``make_vec`` plays ``num_envs`` episodes
  together as the probes do.
* any other acting kind (``mdp``: tabular MDPs): ``Discrete(actions)`` and the environment's
  own observation (unbounded: rewards are Gaussian) and reward; no ``info["regret"]``, as a
  step's regret there depends on where actions lead.
* ``prediction``: the action is the predicted distribution of the next token as logits,
  ``Box(-inf, inf, (symbols,))``, the output of a next-token model; the reward is the log2
  probability the prediction gives the token that comes (minus its log-loss in bits);
  ``info`` has ``logloss_bits`` and ``regret_bits`` (against the exact Bayes predictor).
* ``regression``: the action is the prediction of the current target, ``Box(-inf, inf, (1,))``;
  the reward is minus its squared error divided by the dimension D (the ``mse_per_dim``
  of the probes); ``info`` has ``squared_error_per_dim`` and ``regret_per_dim`` (against ridge,
  the exact Bayes predictor).

:func:`load_policy` turns a frozen run (``runs/<run>/frozen.json``) into a
:class:`FrozenPolicy` that maps an observation (or a batch of them) to an action; it keeps
the model's recurrent state or context between calls, and ``reset()`` starts a new episode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mesaprobe.envs import ENVIRONMENTS, Environment
from mesaprobe.errors import UserError
from mesaprobe.frozen import load_frozen
from mesaprobe.kinds import kind_of
from mesaprobe.settings import build

try:
    import gymnasium
    from gymnasium import spaces
    from gymnasium.utils import seeding
    from gymnasium.vector.utils import batch_space
    from gymnasium.vector.vector_env import AutoresetMode
except ImportError as error:  # an optional dependency
    raise ImportError("mesaprobe.gym needs gymnasium 1.0 or later: pip install 'mesaprobe[gym]'") from error

#: Namespace of the registered ids.
NAMESPACE = "mesaprobe"


def environment_id(family: str) -> str:
    """The Gymnasium id of an environment family: ``bernoulli_bandit`` -> ``mesaprobe/BernoulliBandit-v0``."""
    return f"{NAMESPACE}/{''.join(part.capitalize() for part in family.split('_'))}-v0"


def build_environment(family: str, settings: Mapping[str, Any]) -> Environment:
    """The family's environment with ``settings`` (checked as a study's environment block is)."""
    if family not in ENVIRONMENTS:
        raise UserError(f"unknown environment family {family!r}; expected one of: {', '.join(ENVIRONMENTS)}")
    environment_class = ENVIRONMENTS.get(family)
    config = build(environment_class.Config, dict(settings), key="", file=environment_id(family))
    return environment_class(config)


# --------------------------------------------------------------------------- batches of episodes


class EpisodeBatch:
    """``count`` episodes of one environment played in lockstep on the CPU: the spaces of one
    episode, and reset/step on numpy arrays with a leading batch dimension."""

    def __init__(self, environment: Environment, count: int):
        self.environment = environment
        self.count = count
        self.t = 0

    @property
    def horizon(self) -> int:
        return self.environment.horizon

    def reset(self, generator: torch.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """New tasks; the first observations (count, observation_size) and an info of arrays."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
        """One step of every episode: observations, rewards (count,), whether they ended, info."""
        raise NotImplementedError

    def check_running(self) -> None:
        if self.t >= self.horizon:
            raise RuntimeError("the episode is over: call reset() before step()")


#: Acting kinds whose observations lie in [0, 1] and whose regret is counted step by step
#: (the best expected reward of the step minus the action's).
STEPWISE_KINDS = ("bandit", "commitment")


class ActingBatch(EpisodeBatch):
    """Acting kinds (bandits, the commitment game, MDPs): an action is the index of the arm,
    bit or action chosen."""

    def __init__(self, environment: Environment, count: int):
        super().__init__(environment, count)
        size = environment.observation_size
        self.stepwise = environment.kind in STEPWISE_KINDS
        low, high = (0.0, 1.0) if self.stepwise else (-np.inf, np.inf)
        self.observation_space = spaces.Box(low, high, (size,), np.float32)
        self.action_space = spaces.Discrete(environment.action_count)

    def reset(self, generator: torch.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.generator = generator
        tasks = self.environment.sample_tasks(self.count, generator, "cpu")
        self.state, observation = self.environment.reset(tasks)
        self.t = 0
        return observation.numpy().astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
        self.check_running()
        action = torch.as_tensor(np.asarray(actions), dtype=torch.long).reshape(self.count)
        info = {}
        if self.stepwise:
            regret = self.environment.best_expected_reward(self.state) - self.environment.expected_reward(
                self.state, action
            )
            info["regret"] = regret.double().numpy()
        self.state, observation, reward, done = self.environment.step(self.state, action, self.generator)
        self.t += 1
        return observation.numpy().astype(np.float32), reward.double().numpy(), bool(done), info


class PredictionBatch(EpisodeBatch):
    """Next-token prediction: an action is the logits of the next token, the reward its log2 probability."""

    def __init__(self, environment: Environment, count: int):
        super().__init__(environment, count)
        symbols = environment.symbols
        self.observation_space = spaces.Box(0.0, 1.0, (symbols + 1,), np.float32)
        self.action_space = spaces.Box(-np.inf, np.inf, (symbols,), np.float32)

    def reset(self, generator: torch.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        environment = self.environment
        tasks = environment.sample_tasks(self.count, generator, "cpu")
        self.tokens = environment.sample(tasks, generator)  # (B, T)
        self.inputs = environment.observation(self.tokens)  # (B, T, K + 1)
        rows = torch.arange(self.count)
        bayes = environment.bayes_predict(self.tokens)  # (B, T, K)
        self.bayes_bits = -torch.log2(bayes[rows[:, None], torch.arange(self.horizon)[None, :], self.tokens])
        self.t = 0
        return self.inputs[:, 0].numpy().astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
        self.check_running()
        symbols = self.environment.symbols
        logits = torch.as_tensor(np.asarray(actions), dtype=torch.float64).reshape(self.count, symbols)
        token = self.tokens[:, self.t]  # (B,)
        log_probability = torch.log_softmax(logits, dim=-1).gather(1, token[:, None]).squeeze(1)
        logloss_bits = -log_probability / math.log(2)
        info = {
            "logloss_bits": logloss_bits.numpy(),
            "regret_bits": (logloss_bits - self.bayes_bits[:, self.t]).numpy(),
        }
        self.t += 1
        if self.t < self.horizon:
            observation = self.inputs[:, self.t]
        else:  # after the last token: it as the previous one, the episode's end as the time
            observation = torch.cat(
                [torch.nn.functional.one_hot(token, symbols).float(), torch.ones(self.count, 1)], dim=1
            )
        return observation.numpy().astype(np.float32), -logloss_bits.numpy(), self.t >= self.horizon, info


class RegressionBatch(EpisodeBatch):
    """In-context regression: an action is the prediction of the current target, the reward
    minus its squared error per input dimension."""

    def __init__(self, environment: Environment, count: int):
        super().__init__(environment, count)
        size = environment.observation_size
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, generator: torch.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        environment = self.environment
        tasks = environment.sample_tasks(self.count, generator, "cpu")
        self.examples = environment.sample(tasks, generator)  # inputs (B, K, D), targets (B, K)
        self.inputs = environment.observation(self.examples)  # (B, K, 2 D + 2)
        self.ridge = environment.bayes_predict(self.examples)  # (B, K)
        self.t = 0
        return self.inputs[:, 0].numpy().astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
        self.check_running()
        dimension = self.environment.dimension
        prediction = torch.as_tensor(np.asarray(actions), dtype=torch.float64).reshape(self.count)
        target = self.examples.targets[:, self.t]  # (B,)
        error = (prediction - target) ** 2 / dimension
        ridge_error = (self.ridge[:, self.t] - target) ** 2 / dimension
        info = {"squared_error_per_dim": error.numpy(), "regret_per_dim": (error - ridge_error).numpy()}
        self.t += 1
        if self.t < self.horizon:
            observation = self.inputs[:, self.t]
        else:  # after the last example: no query, the last example, the episode's end as the time
            last = self.examples.inputs[:, -1].float()  # (B, D)
            observation = torch.cat(
                [torch.zeros_like(last), last, target[:, None].float(), torch.ones(self.count, 1)], dim=1
            )
        return observation.numpy().astype(np.float32), -error.numpy(), self.t >= self.horizon, info


#: The batch of each predicted environment kind (acting kinds all play as :class:`ActingBatch`).
PREDICTED_BATCHES: dict[str, type[EpisodeBatch]] = {
    "prediction": PredictionBatch,
    "regression": RegressionBatch,
}


def episode_batch(family: str, settings: Mapping[str, Any], count: int) -> EpisodeBatch:
    environment = build_environment(family, settings)
    if kind_of(environment).acting:
        return ActingBatch(environment, count)
    if environment.kind not in PREDICTED_BATCHES:
        raise UserError(f"environments of kind {environment.kind!r} have no Gymnasium form yet")
    return PREDICTED_BATCHES[environment.kind](environment, count)


def torch_generator(random: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from Gymnasium's numpy generator."""
    return torch.Generator().manual_seed(int(random.integers(0, 2**63 - 1)))


# --------------------------------------------------------------------------- environments


class MesaprobeEnv(gymnasium.Env):
    """One episode at a time of an environment family (``gymnasium.make``); see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, family: str, render_mode: str | None = None, **settings: Any):
        if render_mode is not None:
            raise UserError(f"{environment_id(family)} draws nothing: render_mode must be None")
        self.batch = episode_batch(family, settings, 1)
        self.observation_space = self.batch.observation_space
        self.action_space = self.batch.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        observations, info = self.batch.reset(torch_generator(self.np_random))
        return observations[0], {name: value[0].item() for name, value in info.items()}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        observations, rewards, done, info = self.batch.step(np.asarray(action)[None])
        info = {name: value[0].item() for name, value in info.items()}
        return observations[0], float(rewards[0]), done, False, info


class MesaprobeVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` episodes played as one batch (``gymnasium.make_vec``); see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, family: str, num_envs: int = 1, render_mode: str | None = None, **settings: Any):
        if render_mode is not None:
            raise UserError(f"{environment_id(family)} draws nothing: render_mode must be None")
        if num_envs < 1:
            raise UserError(f"num_envs must be a positive integer, got {num_envs}")
        self.batch = episode_batch(family, settings, num_envs)
        self.num_envs = num_envs
        self.single_observation_space = self.batch.observation_space
        self.single_action_space = self.batch.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.episodes_over = False

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        """New tasks for every episode; ``seed`` (one for the batch: its tasks are drawn together,
        or a list whose first seed is used) makes them repeatable."""
        if isinstance(seed, (list, tuple)):
            seed = seed[0]
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        observations, info = self.batch.reset(torch_generator(self.np_random))
        self.episodes_over = False
        return observations, self.with_masks(info)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One step of every episode; the step after the episodes ended starts new ones (its
        actions are ignored, its rewards 0)."""
        if self.episodes_over:
            observations, info = self.reset()
            nothing = np.zeros(self.num_envs, dtype=bool)
            return observations, np.zeros(self.num_envs), nothing, nothing.copy(), info
        observations, rewards, done, info = self.batch.step(np.asarray(actions))
        self.episodes_over = done
        terminated = np.full(self.num_envs, done, dtype=bool)
        return observations, rewards, terminated, np.zeros(self.num_envs, dtype=bool), self.with_masks(info)

    def with_masks(self, info: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Gymnasium's vector info: each array with a ``_name`` mask of the episodes it holds (all)."""
        return info | {f"_{name}": np.ones(self.num_envs, dtype=bool) for name in info}


def register_families() -> list[str]:
    """Register every environment family not registered yet; returns every family's id."""
    ids = []
    for family in ENVIRONMENTS.names():
        env_id = environment_id(family)
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=f"{__name__}:MesaprobeEnv",
                vector_entry_point=f"{__name__}:MesaprobeVectorEnv",
                kwargs={"family": family},
            )
        ids.append(env_id)
    return ids


#: Every family's Gymnasium id, registered on import.
ENVIRONMENT_IDS: list[str] = register_families()


# --------------------------------------------------------------------------- frozen runs as policies


class FrozenPolicy:
    """A frozen run playing these environments step by step: ``policy(observation) -> action``.

    Takes one observation (observation_size,) or a batch (N, observation_size) and returns the
    action(s) as the environment wants them (an arm index, next-token logits, a prediction);
    the model's recurrent state (or a Transformer's context) is kept between calls, so call
    :meth:`reset` at the start of every episode, with the batch size for batched observations.
    Acting models sample from their policy (``greedy=False``, with a generator seeded by
    ``seed``) or take its most likely action.
    """

    def __init__(self, manifest_path: str | Path, greedy: bool = False, seed: int = 0):
        frozen = load_frozen(manifest_path)
        self.model = frozen.model
        self.manifest = frozen.manifest
        resolved = dict(self.manifest.resolved.environment)
        self.family = resolved.pop("family")
        resolved.pop("task_pool", None)  # Gymnasium episodes draw fresh tasks from the prior
        self.environment_settings: dict[str, Any] = resolved
        """The settings the run was trained with: ``gymnasium.make(policy.environment_id,
        **policy.environment_settings)`` is its training environment."""
        self.environment = build_environment(self.family, resolved)
        kind = kind_of(self.environment)
        self.agent = (
            kind.agent(self.model, self.environment, "greedy" if greedy else "sample")
            if kind.acting
            else None
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.state = None

    @property
    def environment_id(self) -> str:
        """The Gymnasium id of the family the run was trained on."""
        return environment_id(self.family)

    def reset(self, batch: int = 1) -> None:
        """Start new episodes: ``batch`` of them (the number of observations each call passes)."""
        self.state = self.model.initial_state(batch, self.environment.horizon, "cpu")
        self.batch = batch

    @torch.no_grad()
    def __call__(self, observation: np.ndarray) -> Any:
        observation = np.asarray(observation, dtype=np.float32)
        single = observation.ndim == 1
        inputs = torch.as_tensor(observation.reshape(-1, observation.shape[-1]))  # (N, observation_size)
        if self.state is None:
            self.reset(inputs.shape[0])
        if inputs.shape[0] != self.batch:
            raise ValueError(f"reset(batch={inputs.shape[0]}) first: the policy holds {self.batch} episodes")
        if self.agent is not None:
            self.state, action = self.agent.act(self.state, inputs, self.generator)
            actions = action.numpy()
            return int(actions[0]) if single else actions
        self.state, outputs = self.model.step(self.state, inputs)  # next-token logits, or the prediction
        actions = outputs.float().numpy()
        return actions[0] if single else actions


def load_policy(manifest_path: str | Path, greedy: bool = False, seed: int = 0) -> FrozenPolicy:
    """The frozen run of ``runs/<run>/frozen.json`` as a policy for its Gymnasium environment
    (weights and hashes checked by :func:`mesaprobe.frozen.load_frozen`)."""
    return FrozenPolicy(manifest_path, greedy=greedy, seed=seed)
