"""This process's place in a torchrun job: joining it, and agreeing on a branch across processes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from common.device import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun) and its device."""
    device: torch.device
    rank: int = 0
    world_size: int = 1
    processes_per_node: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def agree(self, flags: list[int]) -> list[int]:
        """Element-wise max of integer flags over all processes, so every rank takes the same branch."""
        if self.world_size == 1:
            return flags
        tensor = torch.tensor(flags, dtype=torch.int64, device=self.device)
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun job if there is one (gloo on CPU, nccl on CUDA) and pick this process's device."""
    cuda = resolve_device(device_name).type == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(device=torch.device("cuda", local_rank) if cuda else torch.device("cpu"),
                rank=torch_dist.get_rank(), world_size=world_size,
                processes_per_node=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
