from __future__ import annotations

import torch


class ReplayBuffer:
    """Persistent negative samples for PCD; a share of each draw restarts from noise.

    `noise_low`/`noise_high` define the box the uniform restart noise is drawn from (per feature).
    """

    def __init__(
        self,
        capacity: int,
        noise_low: torch.Tensor,
        noise_high: torch.Tensor,
        reinit_rate: float,
        generator: torch.Generator,
    ):
        if not 0.0 <= reinit_rate <= 1.0:
            raise ValueError(f"reinit_rate must be in [0, 1], got {reinit_rate}")
        if noise_low.shape != noise_high.shape or noise_low.ndim != 1:
            raise ValueError("noise_low and noise_high must be (D,) tensors of the same shape")
        self.capacity = capacity
        self.noise_low = noise_low
        self.noise_high = noise_high
        self.reinit_rate = reinit_rate
        self.generator = generator
        self.samples = self.noise(capacity)  # (capacity, D)
        self.age = torch.zeros(capacity, dtype=torch.long)  # sampler updates since restart

    def noise(self, n: int) -> torch.Tensor:
        u = torch.rand((n, self.noise_low.shape[0]), generator=self.generator)
        return self.noise_low + u * (self.noise_high - self.noise_low)

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, index): chains to continue, a `reinit_rate` share restarted from noise."""
        index = torch.randint(0, self.capacity, (batch_size,), generator=self.generator)
        x = self.samples[index].clone()
        restart = torch.rand(batch_size, generator=self.generator) < self.reinit_rate
        x[restart] = self.noise(int(restart.sum()))
        self.age[index[restart]] = 0
        return x, index

    def update(self, index: torch.Tensor, x: torch.Tensor) -> None:
        self.samples[index] = x.detach().to(self.samples.device)
        self.age[index] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"samples": self.samples.clone(), "age": self.age.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.samples = state["samples"].clone()
        self.age = state["age"].clone()
