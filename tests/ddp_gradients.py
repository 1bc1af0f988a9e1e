"""One training step's gradients under the harness's DDP wrapping (run by test_validation_tasks in 2 processes).

``python tests/ddp_gradients.py OUT SOLVER``: with WORLD_SIZE = 2 each rank takes its half of the batch and rank 0
saves the DDP-averaged gradients to OUT/rank0-SOLVER.pt; with WORLD_SIZE = 1 the whole batch goes through one
process and the gradients go to OUT/single-SOLVER.pt. SOLVER is "rk4" (a fixed grid: the solve is the same
arithmetic per sample whatever the batch, so the two must agree to roundoff) or "gq" (adaptive dopri5: the steps
depend on the batch through the error norm, so the two agree to the solver tolerance).
"""

import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import gqtorch
from validation.harness.methods import Solver
from validation.harness.training import Distributed, train_loader, wrap_model
from validation.tasks.nested_spheres import NestedSpheresModel, nested_spheres_data

GQ_TOL = 1e-9


def rk4(func, y0, t):
    return gqtorch.odeint(func, y0, t, method="rk4", options={"step_size": 0.1})


def main(out: Path, solver: str) -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    group = Distributed(device)
    torch.manual_seed(0)
    model = NestedSpheresModel(16).double()
    data = TensorDataset(*nested_spheres_data(20, torch.Generator().manual_seed(0), dtype=torch.float64))
    trained = wrap_model(model, device, group)
    inputs, targets = next(iter(train_loader(data, len(data) // group.world, seed=0, epoch=0, group=group)))
    solve = rk4 if solver == "rk4" else Solver("gq", GQ_TOL)
    loss = torch.nn.functional.cross_entropy(trained(inputs, solve), targets)
    loss.backward()
    if group.main:
        out.mkdir(parents=True, exist_ok=True)
        name = f"rank0-{solver}.pt" if group.active else f"single-{solver}.pt"
        torch.save({n: p.grad.detach().clone() for n, p in model.named_parameters()}, out / name)
    if group.active:
        # every rank waits here before tearing down: a rank that leaves first can abort gloo's other side
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
