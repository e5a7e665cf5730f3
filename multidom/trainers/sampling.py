"""The online trainer's prompt sampler: TRL's ``RepeatSampler`` with an order that depends on (seed, epoch).

TRL's sampler draws each epoch's permutation from one generator seeded once, so the order of epoch ``e``
depends on how many epochs were drawn before in this process. A run resumed from a checkpoint restarts
the generator and replays epoch 0's order in epoch ``e`` -- the resumed run then trains on other prompts
than the uninterrupted one (measured on the toy task: weights 5e-3 apart after crossing an epoch).
Here the generator is reseeded with ``seed + epoch`` by ``set_epoch`` (which the Trainer calls before
every epoch, also after a resume), so both runs see the same prompts; epoch 0 is TRL's order exactly.
"""
from __future__ import annotations

from trl.trainer.utils import RepeatSampler

__all__ = ["EpochSeededRepeatSampler"]


class EpochSeededRepeatSampler(RepeatSampler):
    """``RepeatSampler`` whose shuffle is a function of ``(seed, epoch)`` (module docstring)."""

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.shuffle:
            self.generator.manual_seed(int(self.seed or 0) + self.epoch)

    @classmethod
    def like(cls, sampler: RepeatSampler) -> EpochSeededRepeatSampler:
        """The same sampler (data, repeats, batch size, shuffle, seed), epoch-seeded."""
        return cls(data_source=sampler.data_source, mini_repeat_count=sampler.mini_repeat_count,
                   batch_size=sampler.batch_size, repeat_count=sampler.repeat_count, shuffle=sampler.shuffle,
                   seed=sampler.seed)
