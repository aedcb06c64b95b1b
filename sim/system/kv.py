"""KV block manager of one engine: paged KV (vLLM-style) in blocks of ``block_size`` tokens.

Capacity = (device memory - weights - activation reserve) // (block_size * KV bytes per token).
A sequence holds ``ceil(tokens / block_size)`` blocks for the tokens whose KV is cached; the
scheduler asks :meth:`can_grow` before a step, :meth:`grow` when it schedules it, and
:meth:`free` when the sequence finishes or is preempted (recompute: its KV is dropped).
"""
from __future__ import annotations

from sim.config import ConfigError
from sim.core.invariants import require


class KVBlockManager:
    def __init__(self, num_blocks: int, block_size: int = 16, where: str = "<engine>"):
        if num_blocks < 1:
            raise ConfigError("device memory above weights + activation reserve (at least one "
                              "KV block)", file=where, key="memory_gb", got=f"{num_blocks} blocks")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.used = 0
        self.held: dict[int, int] = {}      # request id -> blocks

    @classmethod
    def from_memory(cls, memory_bytes: float, weight_bytes: float, reserve_bytes: float,
                    kv_bytes_per_token: float, block_size: int = 16, where: str = "<engine>"):
        free = memory_bytes - weight_bytes - reserve_bytes
        per_block = block_size * kv_bytes_per_token
        return cls(int(free // per_block) if free > 0 else 0, block_size, where)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    @property
    def free_blocks(self) -> int:
        return self.num_blocks - self.used

    def extra(self, rid: int, tokens: int) -> int:
        """Blocks a sequence needs beyond what it holds to cache ``tokens`` tokens."""
        return max(0, self.blocks_for(tokens) - self.held.get(rid, 0))

    def grow(self, rid: int, tokens: int) -> None:
        need = self.extra(rid, tokens)
        require(need <= self.free_blocks, "KVBlockManager", "grow", "blocks available",
                need=need, free=self.free_blocks)
        if need:
            self.held[rid] = self.held.get(rid, 0) + need
            self.used += need

    def free(self, rid: int) -> None:
        self.used -= self.held.pop(rid, 0)
        require(self.used >= 0, "KVBlockManager", "free", "used blocks >= 0", used=self.used)
