"""Drop-in modules, checkpoint compatibility, backend selection and bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_rel_close
from torch import nn

import fastsiren as fs
from fastsiren import env, reference
from fastsiren.dispatch import resolve
from fastsiren.modules import BatchedSiren


@pytest.mark.parametrize("is_first,in_features", [(True, 3), (False, 100)])
def test_sine_layer_is_a_drop_in(gen, is_first, in_features):
    torch.manual_seed(3)
    ours = fs.SineLayer(in_features, 48, is_first=is_first, omega_0=30.0).double()
    theirs = reference.SineLayer(in_features, 48, is_first=is_first, omega_0=30.0).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(37, in_features, generator=gen, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(37, 48, generator=gen, dtype=torch.float64)
    grads = []
    for layer in (ours, theirs):
        y = layer(x)
        grads.append((y, *torch.autograd.grad((y * cot).sum(), [x, *layer.parameters()])))
    for name, a, b in zip(["y", "x", "weight", "bias"], *grads):
        assert_rel_close(a, b, 1e-13, name)


def test_sine_layer_repr_and_names():
    layer = fs.SineLayer(2, 5, is_first=True, omega_0=20.0)
    assert "omega_0=20.0" in repr(layer) and "in_features=2" in repr(layer)
    assert set(dict(layer.named_parameters())) == {"linear.weight", "linear.bias"}


def test_state_dict_loads_both_ways():
    torch.manual_seed(0)
    ours = fs.Siren(2, 32, 3, 1, outermost_linear=True)
    ref = reference.Siren(2, 32, 3, 1, outermost_linear=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    ours2 = fs.Siren(2, 32, 3, 1, outermost_linear=True)
    ours2.load_state_dict(ref.state_dict())
    x = torch.rand(10, 2)
    torch.testing.assert_close(ours2(x), ref(x), rtol=1e-6, atol=1e-6)


class _OfficialSine(nn.Module):
    def forward(self, x):
        return torch.sin(30 * x)


class _OfficialFCBlock(nn.Module):
    """The official FCBlock's module tree (layer i is ``net.{i}.0``, a linear in a sequential
    with its nonlinearity), nested as SingleBVPNet nests it (``net.net``)."""

    def __init__(self, sizes):
        super().__init__()
        inner = nn.Module()
        blocks = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            blocks.append(nn.Sequential(nn.Linear(a, b)) if last
                          else nn.Sequential(nn.Linear(a, b), _OfficialSine()))
        inner.net = nn.Sequential(*blocks)
        self.net = inner

    def forward(self, x):
        return self.net.net(x)


def test_official_single_bvp_net_checkpoint_converts():
    torch.manual_seed(1)
    official = _OfficialFCBlock([2, 16, 16, 16, 1]).double()
    state = official.state_dict()
    assert "net.net.0.0.weight" in state and "net.net.3.0.bias" in state
    model = fs.Siren(2, 16, 2, 1, outermost_linear=True, first_omega_0=30, hidden_omega_0=30)
    model.double().load_state_dict(fs.convert_official_state_dict(state))
    x = torch.rand(20, 2, dtype=torch.float64) * 2 - 1
    # float64: nn.Linear's default init is far from SIREN's, so sin(30 x) is steep here.
    assert_rel_close(model(x), official(x), 1e-12, "output")


def test_converter_rejects_unknown_layouts():
    with pytest.raises(ValueError, match="not an official SIREN checkpoint"):
        fs.convert_official_state_dict({"encoder.weight": torch.zeros(1)})


def test_backend_selection(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(env.BACKEND, raising=False)
    assert resolve("auto", cpu) == "torch"
    monkeypatch.setenv(env.BACKEND, "reference")
    assert resolve("auto", cpu) == "reference"
    assert resolve("torch", cpu) == "torch"  # an explicit choice wins
    monkeypatch.setenv(env.BACKEND, "nonsense")
    with pytest.raises(ValueError, match="FASTSIREN_BACKEND"):
        resolve("auto", cpu)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        resolve("cuda", cpu)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="triton"):
        resolve("triton", torch.device("cpu"))


def test_module_backend_switch(gen):
    model = fs.Siren(2, 16, 1, 1, outermost_linear=True).double()
    x = torch.rand(11, 2, generator=gen, dtype=torch.float64)
    fast = model.jet(x).lap
    assert model.to(backend="reference") is model and model.backend == "reference"
    assert all(m.backend == "reference" for m in model.modules() if hasattr(m, "backend"))
    assert_rel_close(fast, model.jet(x).lap, 1e-10, "lap")
    with pytest.raises(ValueError, match="unknown backend"):
        model.to(backend="fast")


def test_batched_siren_switches_backend_like_siren(gen):
    model = BatchedSiren(3, 2, 8, 1, 1, compile_chunks=False).double()
    x = torch.rand(3, 7, 2, generator=gen, dtype=torch.float64)
    fast = model.jet(x).lap
    assert model.to(backend="reference") is model and model.backend == "reference"
    assert_rel_close(fast, model.jet(x).lap, 1e-10, "lap")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        model.to(backend="fast")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        BatchedSiren(3, 2, 8, 1, 1, backend="fast")


def test_batched_siren_network_i_is_a_siren(gen):
    model = BatchedSiren(3, 2, 8, 1, 2, outermost_linear=False, backend="torch",
                         compile_chunks=False).double()
    x = torch.rand(5, 2, generator=gen, dtype=torch.float64)
    single = model.siren(1)
    assert type(single) is fs.Siren and single.compile_chunks is False
    assert single.backend == "torch" and single.outermost_linear is False
    assert_rel_close(model.jet(x).lap[1], single.jet(x).lap, 1e-13, "lap")
    restacked = BatchedSiren.from_sirens([model.siren(i) for i in range(3)]).double()
    assert_rel_close(restacked.jet(x).value, model.jet(x).value, 1e-13, "value")


@pytest.fixture
def model():
    return fs.Siren(2, 16, 1, 1, outermost_linear=True)


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.rand(5), ValueError, r"expected \[\.\.\., N, 2\]"),
        (torch.rand(5, 3), ValueError, r"expected \[\.\.\., N, 2\]"),
        (torch.randint(0, 3, (5, 2)), TypeError, "floating point"),
        (torch.rand(5, 2, dtype=torch.float64), TypeError, "dtype"),
        (torch.rand(5, 2, device="meta"), RuntimeError, "device"),
    ],
    ids=["1d", "wrong-last-dim", "integer", "float64-vs-float32", "other-device"],
)
def test_bad_coordinates_raise_clear_errors(model, x, error, match):
    with pytest.raises(error, match=match):
        model.jet(x)


@pytest.mark.parametrize("order", [-1, 3])
def test_order_out_of_range(model, order):
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        model.jet(torch.rand(4, 2), order=order)


def test_functional_argument_errors():
    w = [torch.rand(8, 2), torch.rand(1, 8)]
    b = [torch.rand(8), torch.rand(1)]
    x = torch.rand(4, 2)
    with pytest.raises(ValueError, match="one bias and one omega per layer"):
        fs.siren_jet(x, w, b[:1], [30.0, 30.0])
    with pytest.raises(ValueError, match="weight 1 expects 9 input features"):
        fs.siren_jet(x, [w[0], torch.rand(1, 9)], b, [30.0, 30.0])
    with pytest.raises(ValueError, match="bias 0 has shape"):
        fs.siren_jet(x, w, [torch.rand(7), b[1]], [30.0, 30.0])
    with pytest.raises(ValueError, match="coordinates have batch 2"):
        fs.siren_jet(torch.rand(2, 4, 2), [t.expand(3, *t.shape) for t in w],
                     [t.expand(3, *t.shape) for t in b], [30.0, 30.0])
    with pytest.raises(ValueError, match="at least 2 layers"):
        fs.siren_jet(x, w[:1], b[:1], [30.0], outermost_linear=True)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: fs.Siren(0, 16, 1, 1), "in_features"),
        (lambda: fs.Siren(2, 0, 1, 1), "hidden_features"),
        (lambda: fs.Siren(2, 16, 1, 0), "out_features"),
        (lambda: fs.Siren(2, 16, -1, 1), "hidden_layers"),
        (lambda: fs.Siren(2, 16.5, 1, 1), "hidden_features"),
        (lambda: fs.SineLayer(3, 0), "out_features"),
        (lambda: BatchedSiren(0, 2, 16, 1, 1), "n_networks"),
        (lambda: BatchedSiren(2, 2, 16, -1, 1), "hidden_layers"),
    ],
    ids=["in0", "hidden0", "out0", "layers-1", "float-width", "sine-layer-out0", "batched-nets0",
         "batched-layers-1"],
)
def test_bad_sizes_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=rf"^{match} must be a whole number >= [01], got"):
        make()


def test_order_must_be_an_int_not_a_bool(model):
    with pytest.raises(ValueError, match="order must be 0, 1 or 2, got True"):
        model.jet(torch.rand(4, 2), order=True)
    with pytest.raises(ValueError, match="order must be 0, 1 or 2, got True"):
        reference.autograd_jet(lambda c: c, torch.rand(4, 2), order=True)


def test_empty_state_dict_is_not_a_checkpoint():
    with pytest.raises(ValueError, match="empty state dict"):
        fs.convert_official_state_dict({})


def test_numpy_weights_are_named():
    np = pytest.importorskip("numpy")
    w = [np.ones((8, 2), dtype=np.float32), torch.rand(1, 8)]
    with pytest.raises(TypeError, match="weight 0 must be a torch.Tensor, got ndarray"):
        fs.siren_jet(torch.rand(4, 2), w, [torch.rand(8), torch.rand(1)], [30.0, 1.0])
    with pytest.raises(TypeError, match="bias 1 must be a torch.Tensor or None, got ndarray"):
        fs.siren_jet(torch.rand(4, 2), [torch.rand(8, 2), torch.rand(1, 8)],
                     [torch.rand(8), np.ones(1)], [30.0, 1.0])


def test_malformed_chunk_bytes_fails_the_call_not_the_import(monkeypatch):
    import importlib

    from fastsiren import sine_jet
    from fastsiren.errors import InputError

    monkeypatch.setenv("FASTSIREN_CHUNK_BYTES", "4MiB")
    importlib.reload(sine_jet)  # importing with the variable set works
    model = fs.Siren(2, 8, 1, 1, outermost_linear=True, backend="torch")
    with pytest.raises(InputError, match=r"^\$FASTSIREN_CHUNK_BYTES must be a positive "
                       r"whole number of bytes \(e.g. 4194304\), got '4MiB'$"):
        model(torch.rand(3, 2))
