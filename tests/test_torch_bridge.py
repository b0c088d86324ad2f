"""convcore as a PyTorch backend: zero-copy exchange, autograd ops, drop-in layers."""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import convcore
import convcore.torch as ct

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _t(rng, *shape, dtype=torch.float64, requires_grad=True):
    """Random tensor, never zeros."""
    data = torch.from_numpy(rng.uniform(-1.0, 1.0, size=shape)).to(dtype)
    return data.requires_grad_(requires_grad)


# ---------------------------------------------------------------- zero-copy exchange

def test_cpu_tensor_goes_in_and_comes_out_without_copies(rng):
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 5, 5)))
    view = ct._to_convcore(x.requires_grad_())
    assert isinstance(view, np.ndarray) and np.shares_memory(view, x.detach().numpy())
    result = np.ones((2, 3))
    back = ct._from_convcore(result)
    assert isinstance(back, torch.Tensor) and np.shares_memory(back.numpy(), result)


def test_convcore_functions_accept_torch_tensors_and_results_flow_back_without_copies(rng, monkeypatch):
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 6, 6)))
    w = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 3, 3)))
    seen = []
    real = convcore.conv.lookup

    def spy(op, name):
        kernel = real(op, name)

        def record(xa, wa, *rest):
            seen.append((xa, wa))
            return kernel(xa, wa, *rest)

        return record

    monkeypatch.setattr("convcore.conv.lookup", spy)
    out = convcore.conv2d(x, w, padding=1, backend="cpu")  # any __dlpack__ producer, here torch
    # The kernel saw the tensors' own memory (np.from_dlpack, no copy) ...
    assert np.shares_memory(seen[0][0], x.numpy()) and np.shares_memory(seen[0][1], w.numpy())
    # ... and returned NumPy, which torch takes back through DLPack without a copy.
    assert isinstance(out, np.ndarray)
    back = torch.from_dlpack(out)
    assert np.shares_memory(back.numpy(), out)
    expected = torch.nn.functional.conv2d(x, w, padding=1)
    torch.testing.assert_close(back, expected, rtol=1e-12, atol=1e-12)


def test_jax_arrays_are_accepted_by_convcore_functions(rng):
    jnp = pytest.importorskip("jax.numpy")
    x = rng.uniform(-1, 1, (1, 2, 5, 5)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 2, 3, 3)).astype(np.float32)
    # padding=1: the kernel sees a padded copy of x and JAX's read-only w, the signature
    # test_jax_bridge's vmap test compiles too (a read-only specialisation costs ~25 s of JIT).
    out = convcore.conv2d(jnp.asarray(x), jnp.asarray(w), padding=1, backend="cpu")
    np.testing.assert_allclose(out, convcore.conv2d(x, w, padding=1, backend="numpy"), rtol=1e-5, atol=1e-5)


def test_tensors_on_different_devices_are_refused():
    x = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="conv2d: all tensors must be on one device"):
        ct._backend_for("conv2d", x, w)
    with pytest.raises(ValueError, match="CPU and CUDA tensors, got a tensor on meta"):
        ct._backend_for("conv2d", w)


# ---------------------------------------------------------------- ops: forward and gradcheck

CONV_CONFIGS = [
    # (N, C, H, W), (K, C/g, R, S), stride, padding, dilation, groups
    ((2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 3, 6, 7), (2, 3, 2, 3), (1, 3), (0, 2, 1, 0), 1, 1),
    ((1, 2, 5, 5), (2, 1, 3, 3), 1, "same", (2, 1), 2),
]


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=["groups-dilation", "asym-stride-pad4", "same"])
def test_conv2d_matches_torch_and_passes_gradcheck(config, rng):
    input_shape, weight_shape, stride, padding, dilation, groups = config
    x, w, b = _t(rng, *input_shape), _t(rng, *weight_shape), _t(rng, weight_shape[0])

    def ours(x, w, b):
        return ct.conv2d(x, w, b, stride, padding, dilation, groups)

    if isinstance(padding, tuple) and len(padding) == 4:
        top, bottom, left, right = padding
        reference = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (left, right, top, bottom)), w, b,
                                               stride, 0, dilation, groups)
    else:
        reference = torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(ours(x, w, b), reference, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: ct.conv2d(x, w, None, stride, padding, dilation, groups), (x, w))


def test_conv2d_float32_and_partial_gradients(rng):
    x = _t(rng, 2, 3, 6, 6, dtype=torch.float32, requires_grad=False)
    w = _t(rng, 4, 3, 3, 3, dtype=torch.float32)
    out = ct.conv2d(x, w, padding=1)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    x64, w64 = x.double(), w.detach().double().requires_grad_()
    torch.nn.functional.conv2d(x64, w64, padding=1).square().sum().backward()
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-4, atol=1e-4)
    assert x.grad is None


def test_conv2d_double_backward_raises_instead_of_being_wrong(rng):
    x, w = _t(rng, 1, 2, 4, 4), _t(rng, 2, 2, 3, 3)
    (gx,) = torch.autograd.grad(ct.conv2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


def test_conv2d_bad_arguments_name_the_argument(rng):
    x, w = _t(rng, 1, 2, 4, 4), _t(rng, 2, 2, 3)
    with pytest.raises(ValueError, match="conv2d: weight must be 4-D"):
        ct.conv2d(x, w)
    with pytest.raises(ValueError, match="conv2d: groups=3 must divide in_channels=2"):
        ct.conv2d(x, _t(rng, 3, 1, 1, 1), groups=3)
    with pytest.raises(ValueError, match="conv2d: stride must be positive"):
        ct.conv2d(x, _t(rng, 2, 2, 1, 1), stride=0)


def test_opcheck_conv2d(rng):
    x, w, b = _t(rng, 2, 4, 5, 6), _t(rng, 2, 2, 3, 2), _t(rng, 2)
    torch.library.opcheck(torch.ops.convcore.conv2d.default, (x, w, b, [2, 1], [1, 0, 0, 1], [1, 2], 2))
    g = _t(rng, 2, 2, 2, 5, requires_grad=False)
    torch.library.opcheck(torch.ops.convcore.conv2d_input.default, ([2, 4, 5, 6], w.detach(), g, [2, 1], [1, 0, 0, 1], [1, 2], 2))
    torch.library.opcheck(torch.ops.convcore.conv2d_weight.default,
                          (x.detach(), [2, 2, 3, 2], g, [2, 1], [1, 0, 0, 1], [1, 2], 2))


TRANSPOSE_CONFIGS = [
    # (N, C_in, H, W), (C_in, C_out/g, R, S), stride, padding, output_padding, groups, dilation
    ((2, 4, 3, 4), (4, 1, 3, 2), (2, 1), (1, 0), (1, 0), 2, (1, 2)),
    ((1, 2, 3, 3), (2, 3, 2, 3), (1, 3), (0, 1), (0, 2), 1, 1),
]


@pytest.mark.parametrize("config", TRANSPOSE_CONFIGS, ids=["groups-dilation-outpad", "asym-stride"])
def test_conv_transpose2d_matches_torch_and_passes_gradcheck(config, rng):
    input_shape, weight_shape, stride, padding, output_padding, groups, dilation = config
    x, w = _t(rng, *input_shape), _t(rng, *weight_shape)
    b = _t(rng, weight_shape[1] * groups)

    def ours(x, w, b):
        return ct.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)

    expected = torch.nn.functional.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
    torch.testing.assert_close(ours(x, w, b), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (x, w, b))


@pytest.mark.parametrize("input_shape", [(5,), (3, 5), (2, 3, 5)], ids=["1d", "2d", "3d"])
def test_linear_matches_torch_and_passes_gradcheck(input_shape, rng):
    x, w, b = _t(rng, *input_shape), _t(rng, 4, 5), _t(rng, 4)
    torch.testing.assert_close(ct.linear(x, w, b), torch.nn.functional.linear(x, w, b), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ct.linear, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: ct.linear(x, w), (x, w))


POOL_CONFIGS = [
    # kernel_size, stride, padding, dilation, ceil_mode
    ((3, 2), (2, 1), (1, 0), (1, 2), False),
    (2, (1, 3), 1, 1, True),
    (3, None, 0, 1, True),
]


@pytest.mark.parametrize("config", POOL_CONFIGS, ids=["asym-dilation", "ceil-asym-stride", "default-stride-ceil"])
def test_max_pool2d_matches_torch_and_passes_gradcheck(config, rng):
    kernel_size, stride, padding, dilation, ceil_mode = config
    x = _t(rng, 2, 3, 7, 8)

    def ours(x):
        return ct.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)

    out, indices = ct.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    expected, expected_indices = torch.nn.functional.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode,
                                                                return_indices=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert indices.dtype == torch.int64 and torch.equal(indices, expected_indices)
    assert torch.autograd.gradcheck(ours, (x,))


def test_relu_and_hadamard_match_torch_and_pass_gradcheck(rng):
    x = _t(rng, 2, 3, 4)
    torch.testing.assert_close(ct.relu(x), torch.relu(x), rtol=0, atol=0)
    assert torch.autograd.gradcheck(ct.relu, (x,))
    a, b = _t(rng, 2, 1, 4), _t(rng, 3, 1)  # broadcasting: gradients are summed back to each shape
    torch.testing.assert_close(ct.hadamard(a, b), a * b, rtol=0, atol=0)
    assert torch.autograd.gradcheck(ct.hadamard, (a, b))


def test_opcheck_other_ops(rng):
    x, w, b = _t(rng, 2, 4, 3, 4), _t(rng, 4, 1, 3, 2), _t(rng, 2)
    torch.library.opcheck(torch.ops.convcore.conv_transpose2d.default, (x, w, b, [2, 1], [1, 0], [1, 0], 2, [1, 2]))
    torch.library.opcheck(torch.ops.convcore.linear.default, (_t(rng, 3, 5), _t(rng, 4, 5), _t(rng, 4)))
    torch.library.opcheck(torch.ops.convcore.max_pool2d.default, (_t(rng, 2, 3, 7, 8), [3, 2], [2, 1], [1, 0], [1, 2], False))
    torch.library.opcheck(torch.ops.convcore.relu.default, (_t(rng, 2, 3),))
    torch.library.opcheck(torch.ops.convcore.hadamard.default, (_t(rng, 2, 1, 4), _t(rng, 3, 1)))


# ---------------------------------------------------------------- layers

def test_conv2d_layer_is_a_drop_in_for_torch(rng):
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2, padding_mode="reflect")
    ours = ct.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2, padding_mode="reflect")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = _t(rng, 2, 4, 7, 7, dtype=torch.float32, requires_grad=False)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert repr(ours) == repr(theirs)


def test_non_contiguous_tensors_are_accepted(rng):
    x = _t(rng, 2, 6, 5, 3).transpose(1, 3)  # (2, 3, 5, 6), strided
    w = _t(rng, 4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ct.conv2d(x, w, stride=(1, 2)), torch.nn.functional.conv2d(x, w, stride=(1, 2)),
                               rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w: ct.conv2d(x, w, stride=(1, 2)), (x, w))


def test_linear_and_max_pool_layers_are_drop_ins(rng):
    torch.manual_seed(3)
    theirs, ours = torch.nn.Linear(5, 3), ct.Linear(5, 3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = _t(rng, 2, 5, dtype=torch.float32, requires_grad=False)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    pool, reference = ct.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    assert repr(pool) == repr(reference)
    x = _t(rng, 1, 2, 6, 7, dtype=torch.float32, requires_grad=False)
    torch.testing.assert_close(pool(x), reference(x), rtol=0, atol=0)


def _model(layers):
    return torch.nn.Sequential(
        layers.Conv2d(2, 4, 3, padding=1), layers.ReLU(),
        layers.MaxPool2d(2, stride=1),
        layers.Conv2d(4, 4, 3, stride=2, groups=2), layers.ReLU(),
        torch.nn.Flatten(), layers.Linear(4 * 2 * 2, 3),
    )


def test_training_with_convcore_layers_matches_torch_layers(rng):
    torch.manual_seed(1)
    reference = _model(torch.nn).double()
    model = _model(ct).double()
    model.load_state_dict(reference.state_dict())
    x = _t(rng, 4, 2, 7, 7, requires_grad=False)
    target = torch.from_numpy(rng.integers(0, 3, size=4))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (reference, model)]
    for _ in range(4):
        losses = []
        for m, opt in zip((reference, model), optimizers):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-10)
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-10, msg=name)


def test_convert_swaps_layers_in_place(rng):
    torch.manual_seed(2)
    model = _model(torch.nn).double()
    x = _t(rng, 1, 2, 7, 7, requires_grad=False)
    expected = model(x)
    params = list(model.parameters())
    ct.convert(model)
    kinds = [type(layer) for layer in model]
    assert kinds == [ct.Conv2d, ct.ReLU, ct.MaxPool2d, ct.Conv2d, ct.ReLU, torch.nn.Flatten, ct.Linear]
    assert list(model.parameters()) == params  # same Parameter objects: optimizers keep working
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_torch_compile_traces_the_ops_without_graph_breaks(rng):
    """fullgraph=True fails on any graph break: the custom ops and their fake kernels trace."""
    torch.manual_seed(4)
    model = torch.nn.Sequential(ct.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh()).double()
    x = _t(rng, 1, 2, 5, 5)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.sum().backward()
    expected_grad = x.grad.clone()
    x.grad = None
    torch.testing.assert_close(out, model(x), rtol=1e-12, atol=1e-12)
    model(x).sum().backward()
    torch.testing.assert_close(expected_grad, x.grad, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the documented example

def test_docs_torch_example_runs():
    text = (ROOT / "docs" / "torch.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "docs/torch.md has no python example"
    for block in blocks:
        exec(compile(block, "docs/torch.md", "exec"), {})  # noqa: S102  (the point: run the docs)


# ---------------------------------------------------------------- CUDA streams (GPU or simulator)

def test_cuda_backend_computes_on_the_callers_stream(rng):
    """A Numba device array bound to a stream gets its result on that stream (CudaIO.stream)."""
    if not convcore.backends()["cuda"].available:
        pytest.skip("needs the cuda backend (a GPU or the simulator)")
    from numba import cuda

    stream = cuda.stream()

    def on_stream(host):
        array = cuda.device_array(host.shape, host.dtype, stream=stream)
        array.copy_to_device(host, stream=stream)
        return array

    x = rng.uniform(-1, 1, (1, 2, 5, 4))
    w = rng.uniform(-1, 1, (3, 2, 2, 3))
    out = convcore.conv2d(on_stream(x), on_stream(w), padding=1, backend="cuda")
    assert out.stream is stream
    dw = convcore.conv2d_weight(on_stream(x), w.shape, out, padding=1, backend="cuda")  # two kernels, a workspace
    assert dw.stream is stream
    stream.synchronize()
    np.testing.assert_allclose(out.copy_to_host(), convcore.conv2d(x, w, padding=1, backend="numpy"), rtol=1e-12)
    expected_dw = convcore.conv2d_weight(x, w.shape, out.copy_to_host(), padding=1, backend="numpy")
    np.testing.assert_allclose(dw.copy_to_host(), expected_dw, rtol=1e-12)


def test_every_bridged_op_runs_on_the_callers_stream(rng):
    """relu, hadamard, linear, max_pool2d and conv_transpose2d outputs stay on the caller's stream."""
    if not convcore.backends()["cuda"].available:
        pytest.skip("needs the cuda backend (a GPU or the simulator)")
    from numba import cuda

    stream = cuda.stream()

    def on_stream(host):
        array = cuda.device_array(host.shape, host.dtype, stream=stream)
        array.copy_to_device(host, stream=stream)
        return array

    x = rng.uniform(-1, 1, (1, 2, 4, 5))
    w = rng.uniform(-1, 1, (2, 3, 2, 2))
    m = rng.uniform(-1, 1, (3, 5))
    cases = [
        ("relu", (x,), {}),
        ("hadamard", (x, x[:, :1]), {}),
        ("linear", (m, rng.uniform(-1, 1, (2, 5))), {}),
        ("max_pool2d", (x, 2), {"stride": 1}),
        ("conv_transpose2d", (x, w), {"stride": 2}),
    ]
    for name, args, kwargs in cases:
        on_device = (on_stream(a) if isinstance(a, np.ndarray) else a for a in args)
        out = getattr(convcore, name)(*on_device, backend="cuda", **kwargs)
        assert out.stream is stream, name
        stream.synchronize()
        expected = getattr(convcore, name)(*args, backend="numpy", **kwargs)
        np.testing.assert_allclose(out.copy_to_host(), expected, rtol=1e-12, atol=1e-12, err_msg=name)
