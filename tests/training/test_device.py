"""The optimizer's implementation follows the device: fused AdamW on CUDA, torch's default on CPU."""

from __future__ import annotations

import torch

from stepdistill.training.device import adamw_options, make_adamw


def _params() -> list[dict]:
    torch.manual_seed(0)
    return [{"params": [torch.nn.Parameter(torch.randn(3, 2))], "weight_decay": 0.1}]


def test_adamw_is_fused_on_cuda_only():
    assert adamw_options(torch.device("cuda")) == {"fused": True}
    assert adamw_options(torch.device("cuda", 3)) == {"fused": True}
    assert adamw_options(torch.device("cpu")) == {"fused": None, "foreach": None}


def test_cpu_optimizer_is_torch_default_adamw():
    ours = make_adamw(_params(), 1e-3, torch.device("cpu"))
    default = torch.optim.AdamW(_params(), lr=1e-3)
    assert ours.defaults == default.defaults


def test_a_checkpoint_of_the_other_implementation_resumes_with_this_devices_one():
    # A state written by a fused optimizer (as on CUDA; torch also runs fused AdamW on CPU).
    fused = torch.optim.AdamW(_params()[0]["params"], lr=1e-3, fused=True)
    for p in fused.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    fused.step()
    ours = make_adamw(_params(), 1e-3, torch.device("cpu"))
    ours.load_state_dict(fused.state_dict())
    group = ours.param_groups[0]
    assert group["fused"] is None and group["foreach"] is None
    state = ours.state[group["params"][0]]
    assert state["step"].item() == 1.0 and torch.equal(
        state["exp_avg"], fused.state[fused.param_groups[0]["params"][0]]["exp_avg"]
    )


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch):
    import platform

    import torch

    from stepdistill.training.device import cpu_bf16_note

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    note = cpu_bf16_note("bf16")
    assert note is not None and "--train.precision fp32" in note
    assert cpu_bf16_note("fp32") is None and cpu_bf16_note("auto") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert cpu_bf16_note("bf16") is None
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert cpu_bf16_note("bf16") is None
