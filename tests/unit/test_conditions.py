"""The GPU's conditions through NVML, fed by a fake NVML on the CPU: clocks, power, temperature, and a throttled
measurement flagged in a line and a tag."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from vitbench import conditions
from vitbench.conditions import Conditions, GpuSampler


def fake_nvml(readings: list[tuple[int, int, int, int, int]]):
    """An NVML whose one GPU gives ``readings`` in turn (SM MHz, memory MHz, mW, degrees C, clock event reasons),
    the last one ever after."""
    it = iter(readings)
    last = [readings[0]]

    def now():
        last[0] = next(it, last[0])
        return last[0]

    current = {}

    def clock(h, kind):
        current["r"] = now() if kind == "sm" else current["r"]
        return current["r"][0 if kind == "sm" else 1]

    return SimpleNamespace(
        NVML_CLOCK_SM="sm", NVML_CLOCK_MEM="mem", NVML_TEMPERATURE_GPU="gpu",
        nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetHandleByUUID=lambda u: u, nvmlDeviceGetClockInfo=clock,
        nvmlDeviceGetPowerUsage=lambda h: current["r"][2], nvmlDeviceGetTemperature=lambda h, k: current["r"][3],
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: current["r"][4],
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000, nvmlDeviceGetMaxClockInfo=lambda h, k: 1980)


def test_a_gpu_capped_by_power_while_timed_is_recorded_and_said(monkeypatch):
    monkeypatch.setattr(conditions, "_NVML", fake_nvml([(1980, 2619, 350_000, 40, 0)] * 2 + [(1410, 2619, 699_000, 71, 0x4)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    gpu = GpuSampler.of(torch.device("cuda", 0))
    assert gpu.handle == "gpu1" and conditions.nvml_gpus() == ["0", "1"]  # the process's device 0: NVML's GPU 1
    cond = Conditions(gpu=gpu)
    cond.start()
    time.sleep(6 * conditions.SAMPLE_SECONDS)
    cond.stop()
    m = cond.metrics()
    assert m["cond_gpu_sm_clock_mhz_min"] == 1410 and m["cond_gpu_sm_clock_mhz_max"] == 1980
    assert m["cond_gpu_power_w_max"] == 699 and m["cond_gpu_power_limit_w"] == 700 and m["cond_gpu_temp_c_max"] == 71
    assert 0 < m["cond_gpu_throttled_share"] < 1 and "cond_others_cpu_share" in m
    assert "power cap" in cond.gpu_verdict() and "SM clock 1410-1980 MHz" in cond.gpu_verdict()


def test_an_unhindered_gpu_says_nothing_and_no_nvml_records_nothing(monkeypatch):
    monkeypatch.setattr(conditions, "_NVML", fake_nvml([(1980, 2619, 500_000, 50, 0x1)]))  # idle: not a slowdown
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cond = Conditions(gpu=GpuSampler.of(torch.device("cuda")))
    cond.start()
    time.sleep(2 * conditions.SAMPLE_SECONDS)
    cond.stop()
    assert cond.metrics()["cond_gpu_throttled_share"] == 0 and cond.gpu_verdict() == ""
    monkeypatch.setattr(conditions, "_NVML", False)  # no nvidia-ml-py, or no driver
    assert GpuSampler.of(torch.device("cuda")) is None and GpuSampler.of(torch.device("cpu")) is None and conditions.nvml_gpus() == [] and Conditions().gpu_verdict() == ""
