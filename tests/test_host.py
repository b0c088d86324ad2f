"""kernels.host: the one query of the host CPU behind every register-tile choice."""

from convcore.kernels import host
from convcore.kernels.conv2d import cpu_kblock, cpu_phase
from convcore.kernels.gemm import cpu as gemm


def test_every_register_count_decision_follows_the_one_host_query(monkeypatch):
    # The tile choices sized by the vector register file (the GEMM's 6×16 tile, the phase
    # and kblock weight gradients' narrow variants) all read kernels.host, so one host
    # counts the same way in every kernel.
    for has_avx512 in (False, True):
        monkeypatch.setattr(host, "avx512", lambda v=has_avx512: v)
        assert host.narrow_registers() is (not has_avx512)
        assert gemm.narrow_tile() is cpu_phase.wgrad_narrow() is cpu_kblock.wgrad_two_taps() is (not has_avx512)
