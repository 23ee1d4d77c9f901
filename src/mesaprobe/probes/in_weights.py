"""The in-weights probe: how many SGD steps the outer learner needs to do what a frozen agent does in context.

A frozen agent improves within an episode with its weights fixed (in-context learning).
The same job can be done in the weights: fine-tune a memoryless policy by gradient descent
on one task's own experience.  This probe counts the SGD steps that takes, on the very
tasks the agent played:

1. The agent plays ``episodes`` held-out tasks, one episode each.  Its in-context level on
   a task is its mean regret per step over the last tenth of the episode
   (:func:`mesaprobe.metrics.adaptation_window` steps); ``in_context_regret`` is the mean
   over tasks.
2. For every one of those tasks, a memoryless policy (the project's ``memoryless``
   architecture; its first K outputs are the arm logits) plays the task online, episode
   after episode of the environment's horizon (observations built by the environment's
   ``reset``/``step`` as in play), and after every pull takes one plain SGD step on the
   REINFORCE loss ``-log pi(a | o) (r - b)``, with ``b`` the mean of the task's earlier
   rewards (``b = r`` at the first pull): the gradient-bandit algorithm of Sutton & Barto
   (2018, section 2.8) with the MLP as the preference function.  All tasks are
   independent copies trained at once (stacked parameters, ``torch.func.vmap``); the only
   Python loop is over pulls.
3. The policy's expected regret after k SGD steps, without sampling noise, is
   ``sum_a pi_k(a | o_k) (p_best - p_a)`` at the observation ``o_k`` of pull k.  It depends
   on that one observation (after a loss, at an episode's first pull, ...), and recorded
   steps that divide the horizon would always fall on the same places of an episode, so
   ``sgd_regret`` at k is its centred moving average over ``smoothing_steps`` pulls around
   k, mean over tasks (``smoothing_steps: 1`` gives the value at o_k itself).
   ``sgd_steps_to_match`` is the first recorded k at which that curve is at or below
   ``in_context_regret``: ``max_steps + 1`` when it never is (censored: "more than
   max_steps", so a mean over seeds of it is a lower bound whenever a seed is censored).
   ``sgd_matched_fraction`` is the fraction of tasks whose own smoothed curve gets at or
   below the same target, ``in_context_regret`` (the mean over tasks), within max_steps.
   Not the task's own in-context regret: that is one episode's last tenth, often exactly 0
   (the agent settled on the best arm), which a softmax policy never reaches, so a
   per-task target would count such tasks as unmatched whatever the learning speed.
   Every quantity is recomputed on each episode-bootstrap replicate (tasks resampled, the
   target with them), which gives the interval.

The policy starts from fresh weights (target ``fresh_init``, the same initialisation for
every task) and, with ``init: both`` when the probed model is itself memoryless, also from
a copy of that model's frozen weights (target ``own_init``; e.g. a Reptile-trained
initialisation).  Everything the fine-tuning draws (initial weights, reward luck, its
actions) comes from generators named by the held-out key only, so at one seed every agent's
``fresh_init`` curve is the same: agents differ only in the target they set.  The episode
bootstrap weights are named by the held-out key too, so replicate r resamples the same tasks
for every agent at that seed.

Untrained baseline agents (Thompson, Bayes-optimal, ...) are probed too
(``plays_baselines``): their in-context regret is then the target.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Literal

import polars as pl
import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from mesaprobe.agents import ModelAgent, sample_categorical
from mesaprobe.envs.base import Environment
from mesaprobe.metrics import adaptation_window
from mesaprobe.models import build_model
from mesaprobe.models.base import SequenceModel
from mesaprobe.models.memoryless import MemorylessConfig
from mesaprobe.probes.adaptation import heldout_streams
from mesaprobe.probes.inside import InsideProbe, episode_bootstrap_weights, rows_frame
from mesaprobe.seeding import derive_seed, make_generator
from mesaprobe.settings import SettingError
from mesaprobe.train.rollout import play


@dataclass(frozen=True)
class InWeightsConfig:
    episodes: int = 200
    """Held-out tasks: the agent plays each once, and a memoryless policy is fine-tuned on each."""
    replicates: int = 200
    """Episode-bootstrap replicates computed per seed (the interval of the study's summary);
    tasks are resampled, and every quantity is recomputed on the resample."""
    max_steps: int = 2000
    """SGD steps (pulls) of the online fine-tuning on each task."""
    lr: float = 0.1
    """Learning rate of the plain SGD steps; sgd_steps_to_match counts steps at this rate. Chosen
    on a 2-armed uniform bandit (200 tasks, default sizes, fresh weights): the task-mean regret
    falls from about 0.17 (uniform play) to 0.013 after 100 steps and 0.0003 after 2000, with
    every task matching a Thompson agent's level. lr 0.01 and 0.03 are slower (0.11 and 0.047
    after 100 steps); lr 0.3 is faster at first but leaves some tasks on the worse arm (0.0013
    after 2000 steps, 98% of tasks matched); lr 1 stalls at 0.015."""
    hidden: int = MemorylessConfig.hidden
    """Units in each hidden layer of the freshly initialised policy."""
    layers: int = MemorylessConfig.layers
    """Hidden layers of the freshly initialised policy."""
    record_every: int = 10
    """sgd_regret is written every this many SGD steps (0, record_every, ..., and max_steps);
    sgd_steps_to_match is one of those steps (or max_steps + 1, never matched)."""
    smoothing_steps: int = 51
    """Odd width w, in SGD steps, of the centred moving average of the per-pull expected regret
    (sgd_regret, and the curves sgd_steps_to_match and sgd_matched_fraction compare with the
    target): the curve at k is the mean over steps k - w // 2 .. k + w // 2, cut to
    0 .. max_steps at the ends. The expected regret at one pull depends on that pull's
    observation; a centred window does not shift a straight curve, a trailing one would
    delay the match by about w / 2. 1: no smoothing."""
    init: Literal["fresh", "both"] = "fresh"
    """Initial weights of the fine-tuned policy. fresh: a freshly initialised memoryless model,
    the same for every task (target fresh_init). both: also a copy of the probed model's own
    frozen weights when that model is memoryless (target own_init); other agents get fresh only."""

    def validate(self) -> None:
        for name in ("episodes", "max_steps", "hidden", "layers", "record_every"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.replicates < 0:
            raise SettingError("replicates", f"expected a non-negative integer, got {self.replicates}")
        if not self.lr > 0:
            raise SettingError("lr", f"expected a positive learning rate, got {self.lr}")
        if self.smoothing_steps < 1 or self.smoothing_steps % 2 == 0:
            raise SettingError(
                "smoothing_steps", f"expected an odd positive width, got {self.smoothing_steps}"
            )
        if self.init not in ("fresh", "both"):
            raise SettingError("init", f"expected fresh or both, got {self.init!r}")

    @property
    def recorded_steps(self) -> list[int]:
        """SGD step counts written to the table: every record_every-th, and max_steps."""
        steps = list(range(0, self.max_steps + 1, self.record_every))
        return steps if steps[-1] == self.max_steps else [*steps, self.max_steps]


@dataclass(frozen=True)
class OnlineFinetuning:
    """What per-task online fine-tuning saw and did; tensors are (B, N) for N SGD steps unless noted."""

    observations: Tensor
    """(B, N + 1, I) the observation of each pull, and of the pull after the last step."""
    actions: Tensor
    """Arm pulled at each step (sampled from the policy being fine-tuned)."""
    rewards: Tensor
    expected_regrets: Tensor
    """(B, N + 1) float64: sum_a pi_k(a | o_k) (p_best - p_a) after k = 0..N SGD steps."""
    parameters: dict[str, Tensor]
    """Final parameters, each stacked over tasks: (B, *shape)."""


def finetune_online(
    model: SequenceModel,
    environment: Environment,
    tasks,
    steps: int,
    lr: float,
    luck_generator: torch.Generator,
    action_generator: torch.Generator,
    dtype: torch.dtype | None = None,
) -> OnlineFinetuning:
    """Fine-tune one copy of the memoryless ``model`` per task by SGD on that task's pulls.

    Every task plays consecutive episodes of the environment's horizon; at each pull its copy
    samples an arm from softmax(first K outputs), and one plain SGD step with learning rate
    ``lr`` follows on ``-log pi(a | o) (r - b)``, ``b`` the mean of the task's earlier rewards
    (``b = r`` at the first pull, so the first step does not move).  ``model`` is only read (its
    weights are copied); ``dtype`` is that of the copies (default: the model's).
    """
    assert not model.has_memory, (
        "online fine-tuning treats each pull on its own: the model must be memoryless"
    )
    assert not torch.is_inference_mode_enabled(), "fine-tuning needs autograd: run it outside inference_mode"
    arms = environment.action_count
    template = copy.deepcopy(model)  # functional_call swaps parameters in: never on the frozen model
    dtype = dtype or next(model.parameters()).dtype
    with torch.no_grad():
        parameters, buffers = stack_module_state([template] * tasks.batch)  # each (B, *shape)
    parameters = {name: value.detach().to(dtype=dtype).requires_grad_() for name, value in parameters.items()}
    buffers = {name: value.detach() for name, value in buffers.items()}

    def logits_of(task_parameters: dict[str, Tensor], task_buffers: dict[str, Tensor], observation: Tensor):
        outputs = functional_call(template, (task_parameters, task_buffers), (observation[None, None],))
        return outputs[0, 0, :arms]  # (1, 1, K + 1) -> (K,): the value output is not used

    batched_logits = vmap(logits_of)  # (B, ...) parameters, (B, I) observations -> (B, K)
    state, observation = environment.reset(tasks)
    batch, device = observation.shape[0], observation.device
    observations = torch.empty(batch, steps + 1, observation.shape[1], dtype=dtype, device=device)
    actions = torch.empty(batch, steps, dtype=torch.long, device=device)
    rewards = torch.empty(batch, steps, dtype=dtype, device=device)
    expected_regrets = torch.empty(batch, steps + 1, dtype=torch.float64, device=device)
    reward_sum = torch.zeros(batch, dtype=torch.float64, device=device)
    every_arm = torch.arange(arms, device=device)
    for k in range(steps + 1):
        observations[:, k] = observation.to(dtype)
        with torch.enable_grad():
            log_policy = torch.log_softmax(batched_logits(parameters, buffers, observations[:, k]), dim=-1)
        policy = log_policy.detach().exp().double()  # (B, K)
        arm_rewards = torch.stack(
            [environment.expected_reward(state, every_arm[a].expand(batch)) for a in range(arms)], dim=1
        ).double()  # (B, K)
        best = environment.best_expected_reward(state).double()  # (B,)
        expected_regrets[:, k] = (policy * (best[:, None] - arm_rewards)).sum(dim=1)
        if k == steps:
            break
        action = sample_categorical(log_policy.detach(), action_generator)  # (B,)
        state, observation, reward, done = environment.step(state, action, luck_generator)
        if done:
            state, observation = environment.reset(tasks)
        reward = reward.double()
        baseline = reward if k == 0 else reward_sum / k  # the mean of the rewards before this pull
        advantage = (reward - baseline).to(dtype)  # (B,)
        chosen = log_policy.gather(1, action[:, None])[:, 0]  # (B,)
        # Each task's loss depends on its own parameters only, so the gradient of the sum is
        # every task's own gradient, stacked.
        with torch.enable_grad():
            gradients = torch.autograd.grad(-(chosen * advantage).sum(), tuple(parameters.values()))
        with torch.no_grad():
            torch._foreach_add_(tuple(parameters.values()), gradients, alpha=-lr)  # what torch.optim.SGD does
        reward_sum += reward
        actions[:, k] = action
        rewards[:, k] = reward.to(dtype)
    return OnlineFinetuning(
        observations=observations,
        actions=actions,
        rewards=rewards,
        expected_regrets=expected_regrets,
        parameters=parameters,
    )


def centred_moving_average(values: Tensor, width: int) -> Tensor:
    """(..., N) -> (..., N): mean over positions n - width // 2 .. n + width // 2 (odd width),
    over the positions that exist near the ends."""
    assert width >= 1 and width % 2 == 1, width
    if width == 1:
        return values  # exactly, without the rounding of the cumulative sums
    length, half = values.shape[-1], width // 2
    sums = torch.nn.functional.pad(values.cumsum(dim=-1), (1, 0))  # (..., N + 1): sums[n] = sum(values[:n])
    index = torch.arange(length, device=values.device)
    low, high = (index - half).clamp(min=0), (index + half + 1).clamp(max=length)
    return (sums[..., high] - sums[..., low]) / (high - low).to(values.dtype)


def steps_to_match(curves: Tensor, recorded_steps: list[int], targets: Tensor, max_steps: int) -> Tensor:
    """(R,) first recorded step at which each curve (R, S) is at or below its target (R,);
    ``max_steps + 1`` (censored) where it never is."""
    steps = torch.tensor(recorded_steps, dtype=torch.float64, device=curves.device)
    reached = curves <= targets[:, None]  # (R, S)
    first = reached.to(torch.int64).argmax(dim=1)  # the first True, or 0 where there is none
    return torch.where(reached.any(dim=1), steps[first], float(max_steps + 1))


class InWeightsProbe(InsideProbe):
    """SGD steps a memoryless policy needs, trained on each task's own experience, to reach a
    frozen agent's in-context regret on the same tasks."""

    Config: ClassVar[type] = InWeightsConfig
    serves: ClassVar[tuple[str, ...]] = ("bandit",)
    charts: ClassVar[tuple[str, ...]] = ("sgd_regret", "sgd_steps_to_match")
    task: ClassVar[str] = "in-weights probe fine-tunes a policy on bandit pulls"

    def initial_models(
        self, agent, environment: Environment, heldout_key: tuple, device
    ) -> dict[str, SequenceModel]:
        """Memoryless models the fine-tuning starts from, by row target: fresh weights named by
        the held-out key, and (init: both) the probed memoryless model itself (only read)."""
        config = self.config
        with torch.random.fork_rng(devices=[]):  # nn.Linear initialises from the global RNG: restore it
            torch.manual_seed(derive_seed("in-weights-init", *heldout_key))
            fresh = build_model(
                "memoryless",
                MemorylessConfig(hidden=config.hidden, layers=config.layers),
                environment.observation_size,
                environment.action_count + 1,
            )
        models = {"fresh_init": fresh.to(device)}
        own = agent.model if isinstance(agent, ModelAgent) else None  # baselines have no weights
        if config.init == "both" and own is not None and not own.has_memory:
            models["own_init"] = own
        return models

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
        untrained=None,
    ) -> pl.DataFrame:
        """Inside rows (:data:`mesaprobe.analysis.inside.INSIDE_ROW_COLUMNS`) of in_context_regret,
        sgd_regret, sgd_steps_to_match and sgd_matched_fraction.

        ``untrained`` is not used: the fresh-weights fine-tuning is this probe's control.
        """
        config = self.config
        task_generator, luck_generator, action_generator = heldout_streams(heldout_key, agent_key, device)
        # Tasks are drawn outside inference_mode: the fine-tuning below runs with autograd on them.
        tasks = environment.sample_tasks(config.episodes, task_generator, device)
        with torch.inference_mode():
            trajectory = play(environment, tasks, agent, luck_generator, action_generator)
        window = adaptation_window(environment.horizon)
        in_context = trajectory.regrets[:, -window:].double().mean(dim=1).clone()  # (E,)

        weights = episode_bootstrap_weights(
            config.episodes, config.replicates, make_generator("in-weights-bootstrap", *heldout_key)
        ).to(device)  # (R + 1, E)
        totals = weights.sum(dim=1)  # (R + 1,)
        target = weights @ in_context / totals  # (R + 1,)
        frames = [rows_frame("in_context_regret", target[:, None], [0])]

        recorded = torch.tensor(config.recorded_steps, device=device)
        for name, model in self.initial_models(agent, environment, heldout_key, device).items():
            finetuning = finetune_online(
                model,
                environment,
                tasks,
                config.max_steps,
                config.lr,
                make_generator("in-weights-luck", *heldout_key, device=device),
                make_generator("in-weights-actions", *heldout_key, device=device),
            )
            smoothed = centred_moving_average(
                finetuning.expected_regrets, config.smoothing_steps
            )  # (E, N + 1)
            smoothed = smoothed[:, recorded]  # (E, S)
            curve = weights @ smoothed / totals[:, None]  # (R + 1, S)
            matched = smoothed.min(dim=1).values[None, :] <= target[:, None]  # (R + 1, E)
            steps = steps_to_match(curve, config.recorded_steps, target, config.max_steps)  # (R + 1,)
            fraction = (weights * matched).sum(dim=1) / totals  # (R + 1,)
            frames += [
                rows_frame("sgd_regret", curve, config.recorded_steps, target=name),
                rows_frame("sgd_steps_to_match", steps[:, None], [0], target=name),
                rows_frame("sgd_matched_fraction", fraction[:, None], [0], target=name),
            ]
        return pl.concat(frames)
