"""REINFORCE with a learned baseline on Gymnasium's CartPole-v1, fastnn embedded in the loop.

Every environment step asks the policy network (4-64-64-2, ReLU) for action probabilities with
`predict_on_batch` on one observation; after each episode, one `train_on_batch` step of the policy
(advantage-weighted softmax cross-entropy) and one of the value network (4-64-64-1, the baseline,
mean squared error), both with Adam. Episodes are padded to CartPole's 500 steps (rows with zero
weight), so every update has the same shapes and runs on buffers allocated once.

Solved: an average return of at least 475 over 100 consecutive episodes. Prints environment steps
per second and the share of the wall time spent inside fastnn's calls.

    pip install 'fastnn[rl]'                       # fastnn and gymnasium
    python examples/rl_cartpole.py                 # exits 0 once solved
    python examples/rl_cartpole.py --quick         # a few episodes: a smoke test, not a result

bench/rl_cartpole_torch.py runs the same agent (same algorithm, sizes, hyperparameters and loop)
with PyTorch, for the side-by-side figure.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque

import numpy as np

from fastnn import Sequential, backend
from fastnn import kernels as K
from fastnn.layers import Dense, ReLU
from fastnn.losses import Loss, MeanSquaredError
from fastnn.optim import Adam

GAMMA = 0.99
LR_POLICY, LR_VALUE = 2e-3, 5e-3
HIDDEN = 64
MAX_STEPS = 500  # CartPole-v1's time limit: every episode is padded to this many rows
SOLVED, WINDOW = 475.0, 100


def parse_args(doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-episodes", type=int, default=3000, metavar="N",
                   help="give up after N episodes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the environment and "
                   "the action sampling (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="20 episodes: a smoke test that finishes in seconds, not a result")
    args = p.parse_args()
    if args.quick:
        args.max_episodes = min(args.max_episodes, 20)
    return args


def discounted_returns(rewards: list[float], out: np.ndarray) -> None:
    """out[t] = sum_k GAMMA^k r[t+k] for the episode's steps (the rest of `out` is left alone)."""
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + GAMMA * g
        out[t] = g


class Timer:
    """Wall time spent inside the calls it wraps (the framework's share of the loop)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self.t0


class Episode:
    """One episode's transitions in fixed-size buffers (padded to MAX_STEPS rows)."""

    def __init__(self) -> None:
        self.states = np.zeros((MAX_STEPS, 4), np.float32)
        self.actions = np.zeros(MAX_STEPS, np.int64)
        self.returns = np.zeros(MAX_STEPS, np.float32)
        self.rewards: list[float] = []

    def reset(self) -> None:
        self.states.fill(0)
        self.actions.fill(0)
        self.returns.fill(0)
        self.rewards.clear()


def run(agent, args, framework: str) -> int:
    """The training loop shared by the fastnn and torch agents: act, step, learn per episode."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(args.seed)
    ep, recent, timer = Episode(), deque(maxlen=WINDOW), agent.timer
    steps, solved_at, t_start = 0, None, time.perf_counter()
    for episode in range(1, args.max_episodes + 1):
        obs, _ = env.reset(seed=args.seed * 100_000 + episode)
        ep.reset()
        done, t = False, 0
        while not done:
            ep.states[t] = obs
            p1 = agent.prob_right(ep.states[t : t + 1])
            action = int(rng.random() < p1)
            obs, reward, terminated, truncated, _ = env.step(action)
            ep.actions[t] = action
            ep.rewards.append(float(reward))
            done, t = terminated or truncated, t + 1
        steps += t
        discounted_returns(ep.rewards, ep.returns)
        agent.learn(ep.states, ep.actions, ep.returns, t)
        recent.append(t)
        average = sum(recent) / len(recent)
        if episode % 50 == 0 or args.quick:
            print(f"episode {episode:5d}  return {t:3d}  average of last {len(recent):3d}: "
                  f"{average:6.1f}", flush=True)
        if len(recent) == WINDOW and average >= SOLVED:
            solved_at = episode
            break
    wall = time.perf_counter() - t_start
    env.close()
    print(f"\n{framework}: {'solved' if solved_at else 'not solved'} after {episode} episodes "
          f"(average return {average:.1f} over the last {len(recent)}), {steps:,} environment "
          f"steps in {wall:.1f} s: {steps / wall:,.0f} steps/s; {100 * timer.seconds / wall:.0f}% "
          f"of the time in {framework} calls ({timer.seconds:.1f} s)")
    return 0 if solved_at or args.quick else 1


class FastnnAgent:
    def __init__(self, seed: int) -> None:
        def mlp(out: int, k: int) -> Sequential:
            return Sequential([Dense(4, HIDDEN, seed=seed * 10 + k), ReLU(),
                               Dense(HIDDEN, HIDDEN, seed=seed * 10 + k + 1), ReLU(),
                               Dense(HIDDEN, out, seed=seed * 10 + k + 2)])

        self.policy, self.value = mlp(2, 0), mlp(1, 3)
        self.policy_opt = Adam(self.policy.parameters(), lr=LR_POLICY)
        self.value_opt = Adam(self.value.parameters(), lr=LR_VALUE)
        self.pg_loss, self.mse = AdvantageWeightedCrossEntropy(), MeanSquaredError()
        self.targets = np.zeros((MAX_STEPS, 2), np.float32)  # (action, advantage) per row
        self.value_targets = np.zeros((MAX_STEPS, 1), np.float32)
        self.timer = Timer()

    def prob_right(self, obs: np.ndarray) -> float:
        with self.timer:
            logits = self.policy.predict_on_batch(obs)
        return 1.0 / (1.0 + math.exp(float(logits[0, 0] - logits[0, 1])))

    def learn(self, states, actions, returns, n: int) -> None:
        scale = 1.0 - GAMMA  # returns up to 1/(1 - GAMMA): the value net predicts them scaled
        with self.timer:
            values = self.value.predict_on_batch(states)
        advantage = returns[:n] - values[:n, 0] / scale
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        self.targets[:, 0] = actions
        self.targets[:, 1] = 0  # padding rows: no weight
        self.targets[:n, 1] = advantage
        self.value_targets[:, 0] = values[:, 0]  # padding rows: no error
        self.value_targets[:n, 0] = returns[:n] * scale
        with self.timer:
            self.policy.train_on_batch(states, self.targets, loss=self.pg_loss,
                                       optimizer=self.policy_opt)
            self.value.train_on_batch(states, self.value_targets, loss=self.mse,
                                      optimizer=self.value_opt)


class AdvantageWeightedCrossEntropy(Loss):
    """The policy-gradient loss, mean over rows of -advantage * log softmax(logits)[action], for
    targets (N, 2) holding (action, advantage) per row: its gradient is the softmax
    cross-entropy's with each row scaled by its advantage (into buffers reused every call).
    forward returns the plain cross-entropy, for logs (the weighted one averages to about 0)."""

    def forward(self, outputs, targets) -> float:
        self.labels = self.ws.get("labels", (len(targets),), np.int64)
        np.copyto(self.labels, targets[:, 0], casting="unsafe")
        ce, self.grad = K.softmax_cross_entropy(outputs, self.labels, ws=self.ws)
        self.grad *= targets[:, 1:2]
        return ce

    @staticmethod
    def accuracy(outputs, targets) -> float:
        return float((outputs.argmax(axis=1) == targets[:, 0]).mean())


def main() -> int:
    args = parse_args(__doc__)
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        print("rl_cartpole needs gymnasium: pip install 'fastnn[rl]' (or pip install gymnasium)",
              file=sys.stderr)
        return 2
    print(f"fastnn backend {backend.current()} ({backend.resolve('dense_forward')} for dense), "
          f"{backend.get_num_threads()} thread(s); seed {args.seed}")
    return run(FastnnAgent(args.seed), args, "fastnn")


if __name__ == "__main__":
    sys.exit(main())
