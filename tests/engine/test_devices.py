import pytest
import torch

from xaibench.engine.devices import cuda_precision, resolve_device
from xaibench.errors import UserError


@pytest.fixture
def tf32_on():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_cuda_runs_in_full_float32_unless_tf32_is_asked_for_and_the_flags_are_restored(tf32_on):
    with cuda_precision(torch.device("cuda"), tf32=False):
        assert _flags() == (False, False)
    assert _flags() == (True, True)
    with cuda_precision(torch.device("cuda"), tf32=True):
        assert _flags() == (True, True)
    with pytest.raises(RuntimeError), cuda_precision(torch.device("cuda"), tf32=False):
        raise RuntimeError("a failed run")
    assert _flags() == (True, True)


def test_the_cpu_leaves_the_flags_alone(tf32_on):
    with cuda_precision(torch.device("cpu"), tf32=False):
        assert _flags() == (True, True)


def test_cuda_without_a_gpu_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
