"""A training step's cost (netdsl/cost.py `Training`, `summary --train`) against PyTorch itself.

- saved for backward: the bytes the cost model predicts at batch 2 equal what
  `torch.autograd.graph.saved_tensors_hooks` records on the emitted module in train mode, each
  distinct storage once (by `untyped_storage().data_ptr()`), parameters and buffers excluded —
  for every network in networks/, at the smallest input the checker accepts; under CPU autocast
  to bfloat16 for six of them (low-precision casts, batch norm on bfloat16, LRN's float32 pool);
- parameters, gradients and optimizer state: the bytes of the tensors `torch.optim` holds after
  one step, for each optimizer;
- training FLOPs: `torch.utils.flop_counter.FlopCounterMode` over forward and backward, for every
  network; it counts a grouped convolution's weight gradient `groups` times over (its formula
  ignores groups there), so that term is added to ours before comparing (docs/cost.md).
Heavy networks are `slow` (CI runs them); the fast ones are small networks with convolutions, batch
norm, in-place activations, residuals, max pooling, squeeze-excitation gates, dropout and LRN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
import zoo
from netdsl.cost import DEVICE_MEMORY, Precision, analyse

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
FAST = {"lenet5", "linear_cifar10", "resnet_cifar", "resnet18", "mobilenet_v3_small", "alexnet2012"}
AMP = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "googlenet", "alexnet2012", "shufflenet_v2_x0_5"]
BATCH = 2


def _cases(names):
    """Each network a case; the heavy ones `slow`; one over `zoo.BIG` parameters skipped with its
    reason (its weights and gradients alone would take 5 GB: held to its count and keys instead)."""
    cases = []
    for name in names:
        marks = [] if name in FAST else [pytest.mark.slow]
        if zoo.big(NETWORKS / f"{name}.net"):
            marks.append(pytest.mark.skip(reason=f"over {zoo.BIG:,} parameters: tests/test_networks.py holds it "
                                                 "to its count and keys"))
        cases.append(pytest.param(name, id=name, marks=marks))
    return cases


ALL = [path.stem for path in zoo.distinct()]  # a family file that is one of its members: tested as that member


smallest = zoo.smallest


def _model(network):
    """The module in training mode, its tensors zeros: what autograd saves and what FlopCounterMode
    counts depend on shapes only, so the random initialization is not paid for."""
    model = zoo.uninitialized(network).train()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.zero_()
    return model


def _outputs(out) -> list:
    """Every output of a training forward pass: (output, [auxiliary outputs]) with heads."""
    return [out[0], *out[1]] if isinstance(out, tuple) else [out]


def _forward_and_backward(model, x, amp: str | None = None):
    """Bytes saved for backward (each storage once, parameters and buffers excluded) and the FLOPs
    FlopCounterMode counts over forward and backward (the loss sums every output)."""
    from torch.utils.flop_counter import FlopCounterMode

    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in state:
            saved.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            with torch.autocast("cpu", dtype=getattr(torch, amp or "bfloat16"), enabled=amp is not None):
                loss = sum(output.float().sum() for output in _outputs(model(x)))
        loss.backward()
    return sum(saved.values()), counter.get_total_flops()


def _grouped_weight_gradients(network) -> int:
    """The weight-gradient MACs FlopCounterMode counts more than there are: groups - 1 times each
    grouped convolution's (its conv_backward formula takes every input channel as the batch)."""
    return sum((layer.args["groups"] - 1) * layer.macs for _, layer in network.layers()
               if layer.op in ("conv", "conv_transpose") and layer.args["groups"] > 1)


@pytest.mark.parametrize("name", _cases(ALL))
def test_saved_activations_and_training_flops_equal_torchs(name):
    network = smallest(name)
    model = _model(network)
    saved, flops = _forward_and_backward(model, torch.randn(BATCH, *network.input_shape))
    training = analyse(network, Precision(device="cpu")).training
    assert training.saved.at(BATCH) == saved
    assert BATCH * training.flops + 2 * BATCH * _grouped_weight_gradients(network) == flops
    del model
    zoo.release_memory()


@pytest.mark.parametrize("name", _cases(AMP))
def test_saved_activations_under_cpu_autocast_bfloat16(name):
    network = smallest(name)
    model = _model(network)
    saved, _ = _forward_and_backward(model, torch.randn(BATCH, *network.input_shape), amp="bfloat16")
    assert analyse(network, Precision("bfloat16", "cpu")).training.saved.at(BATCH) == saved
    del model
    zoo.release_memory()


OPTIMIZERS = {
    "sgd": lambda parameters: torch.optim.SGD(parameters, lr=0.1),
    "momentum": lambda parameters: torch.optim.SGD(parameters, lr=0.1, momentum=0.9),
    "adam": lambda parameters: torch.optim.Adam(parameters),
    "adamw": lambda parameters: torch.optim.AdamW(parameters),
}


@pytest.mark.parametrize("name", ["resnet18", "lenet5"])
def test_parameters_gradients_and_optimizer_state_equal_what_torch_optim_holds(name):
    network = smallest(name)
    training = analyse(network).training
    model = _model(network)
    x = torch.randn(BATCH, *network.input_shape)
    for optimizer_name, make in OPTIMIZERS.items():
        model.zero_grad(set_to_none=True)
        optimizer = make(model.parameters())
        sum(output.sum() for output in _outputs(model(x))).backward()
        optimizer.step()
        memory = training.memory(BATCH, optimizer_name)
        state = [value for values in optimizer.state.values() for value in values.values() if torch.is_tensor(value)]
        assert memory["optimizer"] == sum(value.untyped_storage().nbytes() for value in state), optimizer_name
        assert memory["params"] == sum(p.nbytes for p in model.parameters())
        assert memory["grads"] == sum(p.grad.nbytes for p in model.parameters())
        assert memory["buffers"] == sum(b.nbytes for b in model.buffers())


def test_googlenet_trains_its_auxiliary_heads():
    """The heads' parameters get gradients (the loss uses every output), and their MACs are a training step's."""
    network = netdsl.check(NETWORKS / "googlenet.net")
    training = analyse(network).training
    assert training.forward_macs == network.macs + network.aux_macs
    heads = {head.name for head in network.aux_heads}
    head_macs = sum(layer.macs for path, layer in network.layers() if path.split(".")[0] in heads)
    assert head_macs == network.aux_macs


# ---- the peak, the batch fit -----------------------------------------------------------------

def test_peak_is_affine_in_the_batch_and_fit_is_the_largest_batch_that_fits():
    training = analyse(netdsl.check(NETWORKS / "resnet50.net")).training
    peaks = [training.memory(batch, "adam")["peak"] for batch in (1, 2, 3)]
    assert peaks[2] - peaks[1] == peaks[1] - peaks[0] == (training.saved + training.live).per_sample
    capacity = 80 * 2**30
    batch = training.fit(capacity, "adam")
    assert training.memory(batch, "adam")["peak"] <= capacity < training.memory(batch + 1, "adam")["peak"]
    assert training.fit(training.memory(1, "adam")["peak"] - 1, "adam") == 0
    assert training.fit(capacity, "sgd") > batch  # no optimizer state: more room


def test_memory_parts_add_up_to_the_peak():
    memory = analyse(netdsl.check(NETWORKS / "resnet18.net")).training.memory(8, "momentum")
    assert memory["peak"] == sum(size for name, size in memory.items() if name != "peak")
    assert memory["params"] == memory["grads"] == memory["optimizer"] == 4 * 11_689_512


def test_cuda_rules_differ_where_torch_does(tmp_path):
    """On CUDA dropout keeps a bool mask (native_dropout) and autocast runs layer norm in float32;
    on the CPU the mask has the input's dtype and layer norm follows its input (bytes per sample)."""
    path = tmp_path / "t.net"
    path.write_text("network t {\n  input [3, 8, 8]\n  conv(4, 3, pad=1)\n  layernorm\n  dropout(0.5)\n"
                    "  flatten\n  linear(10)\n}\n")
    network = netdsl.check(path)
    x, y, stats = 3 * 8 * 8, 4 * 8 * 8, 2 * 8 * 8 * 4  # the input's and the map's elements; layer norm's statistics

    def per_sample(amp, device):
        return analyse(network, Precision(amp, device)).training.saved.per_sample

    # conv: its input; layernorm: its input and statistics; dropout: its mask; linear: its input
    assert per_sample(None, "cpu") == 4 * x + 4 * y + stats + 4 * y + 4 * y
    assert per_sample(None, "cuda") == 4 * x + 4 * y + stats + 1 * y + 4 * y
    # autocast: conv reads a bfloat16 copy of the input; on the CPU everything after it stays bfloat16
    assert per_sample("bfloat16", "cpu") == 2 * x + 2 * y + stats + 2 * y + 2 * y
    # on CUDA layernorm reads a float32 copy and returns float32, which linear casts back down
    assert per_sample("bfloat16", "cuda") == 2 * x + 4 * y + stats + 1 * y + 2 * y
    weight_copies = analyse(network, Precision("bfloat16", "cpu")).training.saved.fixed
    assert weight_copies == 2 * (4 * 3 * 9 + 4 * 8 * 8 * 10)  # conv's and linear's weights in bfloat16


# ---- the command line ------------------------------------------------------------------------

def _summary(capsys, *args) -> str:
    from netdsl import cli

    assert cli.main(["summary", *map(str, args)]) == 0
    return capsys.readouterr().out


def test_summary_train_json_is_the_cost_model(capsys):
    path = NETWORKS / "resnet18.net"
    report = json.loads(_summary(capsys, path, "--train", "--json", "--batch", 4, "--optimizer", "momentum",
                                 "--amp", "bfloat16", "--device", "cpu", "--fit", "24GB"))
    training = netdsl.training(path, amp="bfloat16", device="cpu")
    got = report["training"]
    memory = training.memory(4, "momentum")
    assert got["memory"]["peak_bytes"] == memory["peak"] and got["memory"]["saved_bytes"] == memory["saved"]
    assert got["memory"]["optimizer_bytes"] == 4 * 11_689_512  # one momentum buffer per parameter
    assert got["fit"] == {"capacity_bytes": 24 * 10**9, "batch": training.fit(24 * 10**9, "momentum")}
    assert got["macs"]["total"] == 4 * training.macs and got["flops"] == 2 * got["macs"]["total"]
    assert (got["amp"], got["device_rules"], report["batch"]) == ("bfloat16", "cpu", 4)
    rows = [row for row in report["rows"] if row["level"] == 0]  # the input and the top-level modules
    assert sum(row["saved_bytes"] for row in rows) == memory["saved"]  # each storage at its first saver
    assert sum(row["backward_macs"] for row in rows) == got["macs"]["backward"]


def test_summary_train_text_shows_the_peak_and_the_fit(capsys):
    out = _summary(capsys, NETWORKS / "resnet50.net", "--train", "--batch", 32, "--depth", 1, "--fit", "h100")
    header = out.splitlines()[0].split()
    assert header == ["layer", "type", "output", "params", "MACs", "memory", "saved", "backward", "MACs", "RF"]
    training = netdsl.training(NETWORKS / "resnet50.net")
    batch = training.fit(DEVICE_MEMORY["h100"] * 2**30, "adam")
    assert f"largest batch that fits in h100 (80.00 GiB): {batch:,} (peak " in out
    assert "training step, batch 32, float32 (cuda rules), optimizer adam:" in out
    assert "not counted: allocator rounding and caching, cuDNN and cuBLAS workspaces" in out
    conv1 = next(line for line in out.splitlines() if line.startswith("conv1 "))
    assert conv1.split()[2:6] == ["[32,", "64,", "112,", "112]"]  # the batch in the output column
    assert "19.27 MB" in conv1  # it saves its input: 32 x 3 x 224 x 224 float32


def test_summary_depth_0_is_one_line(capsys):
    out = _summary(capsys, NETWORKS / "resnet18.net", "--depth", 0)
    assert out == ("resnet18: [3, 224, 224] -> [1000], 11,689,512 params, 1.81 G MACs, activations 32.92 MB at "
                   "float32 (per sample)\n")
    out = _summary(capsys, NETWORKS / "resnet18.net", "--depth", 0, "--batch", 8, "--fit", "a100")  # implies --train
    assert out.count("\n") == 1 and "training at batch 8, float32 (cuda rules), adam: peak" in out
    assert f"largest batch in a100: {netdsl.training(NETWORKS / 'resnet18.net').fit(80 * 2**30, 'adam')}" in out


def test_merge_rows_show_their_own_numbers_not_their_parents(capsys):
    report = json.loads(_summary(capsys, NETWORKS / "googlenet.net", "--depth", 3, "--json"))
    rows = report["rows"]
    parent = next(index for index, row in enumerate(rows) if row["path"] == "inception3a")
    concat = rows[parent + 1]
    assert rows[parent]["params"] == 155_872
    assert (concat["type"], concat["params"], concat["macs"]) == ("concat", 0, 0)
    assert concat["memory"]["elements"] == 256 * 28 * 28  # its own output
    text = _summary(capsys, NETWORKS / "googlenet.net", "--depth", 3)
    row = next(line for line in text.splitlines() if line.strip().startswith("(concat)"))
    assert "155,872" not in row and row.split()[1:5] == ["[256,", "28,", "28]", "802.82"]


def test_compile_overview_is_drawn_like_the_summary(tmp_path):
    result = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(NETWORKS / "resnet18.net"),
                             "--format", "python", "-o", str(tmp_path / "r.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["layer", "type", "output", "params"] and set(lines[2]) == {"─"}
    assert lines[3].split() == ["input", "[3,", "224,", "224]"]
    assert lines[-2] == "total: 11,689,512 parameters, 1.81 G MACs per sample"


def test_the_docs_name_every_device_fit_knows():
    text = (ROOT / "docs" / "cost.md").read_text(encoding="utf-8")
    section = text[text.index("## Training"):text.index("## Receptive field")]
    assert all(f"`{name}`" in section for name in DEVICE_MEMORY)
