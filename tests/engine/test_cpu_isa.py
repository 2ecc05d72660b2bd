"""The CLI pins torch's and oneDNN's CPU kernels before torch loads (xaibench.engine.cpu_isa)."""

import platform
import subprocess
import sys

import pytest

from xaibench.engine import cpu_isa
from xaibench.errors import UserError


def test_the_default_pins_both_kernel_variables_to_avx2():
    env = {}
    assert cpu_isa.pin(env, torch_loaded=False) == "avx2"
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert cpu_isa.describe(env) == "ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2"


def test_native_pins_nothing_and_a_users_own_setting_is_kept():
    env = {"XAIBENCH_CPU_ISA": "native"}
    assert cpu_isa.pin(env, torch_loaded=False) == "native" and cpu_isa.describe(env) == ""
    env = {"ATEN_CPU_CAPABILITY": "default"}
    cpu_isa.pin(env, torch_loaded=False)
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_nothing_is_set_once_torch_is_loaded():
    # half a pin (oneDNN's variable read later, torch's kernels chosen already) would train
    # with AVX2 oneDNN kernels that the oneDNN guard does not know about
    env = {}
    assert cpu_isa.pin(env, torch_loaded=True) == "too late" and env == {}


def test_an_unknown_choice_is_a_user_error_naming_the_variable():
    with pytest.raises(UserError, match="XAIBENCH_CPU_ISA='avx9'.*avx2, native"):
        cpu_isa.pin({"XAIBENCH_CPU_ISA": "avx9"})


def test_cli_reports_a_bad_choice_as_one_error_line():
    env = {"XAIBENCH_CPU_ISA": "avx9", "PATH": ""}
    out = subprocess.run([sys.executable, "-m", "xaibench.cli", "list"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == ["error: XAIBENCH_CPU_ISA='avx9' is not a CPU instruction-set choice; use one of avx2, native"]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the AVX2 pin is for x86-64 CPUs")
def test_torch_loaded_after_the_pin_uses_avx2_kernels():
    # on an AVX-512 CPU torch would report AVX512 without the pin
    code = "from xaibench.engine import cpu_isa; cpu_isa.pin(); import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {k: v for k, v in __import__("os").environ.items() if k not in cpu_isa.VARIABLES and k != cpu_isa.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "AVX2"
