"""The agent of examples/rl_cartpole.py (REINFORCE with a learned baseline on CartPole-v1) written
with PyTorch eager: the same loop (imported from the example), network sizes, losses, Adam
hyperparameters, padding and seeds; only the framework differs (and so the initial weights).
Prints the same line as the example, for the side-by-side figure:

    python bench/rl_cartpole_torch.py [--max-episodes N] [--seed S] [--quick] [--threads T]

--threads sets torch's intra-op threads (default 1, as FASTNN_NUM_THREADS=1 for the example).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import rl_cartpole as ex  # noqa: E402  (the shared loop and hyperparameters)


class TorchAgent:
    def __init__(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)
        self.torch, nn = torch, torch.nn

        def mlp(out: int) -> nn.Sequential:
            h = ex.HIDDEN
            return nn.Sequential(nn.Linear(4, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                 nn.Linear(h, out))

        self.policy, self.value = mlp(2), mlp(1)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=ex.LR_POLICY)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=ex.LR_VALUE)
        self.targets = np.zeros((ex.MAX_STEPS, 2), np.float32)
        self.value_targets = np.zeros((ex.MAX_STEPS, 1), np.float32)
        self.timer = ex.Timer()

    def prob_right(self, obs: np.ndarray) -> float:
        with self.timer, self.torch.no_grad():
            logits = self.policy(self.torch.from_numpy(obs)).numpy()
        return 1.0 / (1.0 + math.exp(float(logits[0, 0] - logits[0, 1])))

    def learn(self, states, actions, returns, n: int) -> None:
        torch, F, scale = self.torch, self.torch.nn.functional, 1.0 - ex.GAMMA
        with self.timer, torch.no_grad():
            values = self.value(torch.from_numpy(states)).numpy()
        advantage = returns[:n] - values[:n, 0] / scale
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        self.targets[:, 1] = 0
        self.targets[:n, 1] = advantage
        self.value_targets[:, 0] = values[:, 0]
        self.value_targets[:n, 0] = returns[:n] * scale
        with self.timer:
            x = torch.from_numpy(states)
            # the example's loss: mean over all (padded) rows of -advantage * log pi(action)
            logp = F.log_softmax(self.policy(x), dim=1)
            picked = logp.gather(1, torch.from_numpy(actions).unsqueeze(1))[:, 0]
            loss = -(torch.from_numpy(self.targets[:, 1]) * picked).mean()
            self.policy_opt.zero_grad()
            loss.backward()
            self.policy_opt.step()
            vloss = F.mse_loss(self.value(x), torch.from_numpy(self.value_targets))
            self.value_opt.zero_grad()
            vloss.backward()
            self.value_opt.step()


def main() -> int:
    import argparse

    try:
        import gymnasium  # noqa: F401
        import torch
    except ImportError as exc:
        print(f"rl_cartpole_torch needs torch and gymnasium: {exc}", file=sys.stderr)
        return 2
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, default=1)
    known, rest = threads.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = ex.parse_args(__doc__)
    torch.set_num_threads(known.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); seed {args.seed}")
    return ex.run(TorchAgent(args.seed), args, "torch")


if __name__ == "__main__":
    sys.exit(main())
