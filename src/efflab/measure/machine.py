"""The machine a measurement ran on: time and memory figures mean nothing without it.

Efficiency Misnomer (arXiv 2110.12894), Sec. 5: report the hardware alongside every speed.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform

import torch

import efflab


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info(device: torch.device | str, dtype: torch.dtype) -> dict[str, object]:
    """Device name, cores, threads, versions and dtype, as plain data."""
    device = torch.device(device)
    info: dict[str, object] = {
        "device": str(device),
        "device_name": cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "efflab_version": efflab.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "dtype": str(dtype).replace("torch.", ""),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["device_name"] = props.name
        info["gpu_memory_bytes"] = int(props.total_memory)
        info["cuda_version"] = torch.version.cuda
    return info
