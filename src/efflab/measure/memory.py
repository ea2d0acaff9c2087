"""Peak memory of an inference call and of a training step (Efficiency Misnomer, Sec. 2).

* CUDA: the caching allocator's own peak statistic: ``max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus what was allocated before (the weights and inputs).
* CPU: there is no allocator statistic, and the resident set of a long-lived process is
  polluted by everything it did before. So the work runs in a fresh child process (forked
  from a server process that has imported torch and done nothing else) holding nothing but
  the model and the inputs: the child zeroes its peak-RSS mark (``/proc/self/clear_refs``),
  runs the step twice and reports ``VmHWM - VmRSS_before``: the growth of the resident set
  caused by the step, one-time library buffers of the first call included (a few MiB).
  Where ``clear_refs`` cannot be written, ``ru_maxrss`` (peak since the child started) is
  used instead, and the method says so.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import io
import os
import pickle
import re
import resource
import select
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from efflab.measure.steps import LossFn, make_step

#: steps run inside the probe; the peak covers all of them (first-call allocations included)
PROBE_RUNS = 2


@dataclass
class PeakMemory:
    """Peak memory growth in bytes of one step (``None`` when it could not be measured)."""

    bytes: int | None
    method: str
    note: str = ""


def cuda_peak_growth(step, device: torch.device, runs: int = PROBE_RUNS) -> int:
    """Bytes allocated at the peak of ``runs`` calls of ``step`` beyond what was allocated
    before them, from the CUDA caching allocator's statistics."""
    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    for _ in range(runs):
        step()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        m = re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if m is None:
        raise OSError(f"{field_name} not found in /proc/self/status")
    return int(m.group(1))


def _reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """glibc's ``malloc_trim(0)``: return every free heap page to the kernel (no-op where the
    C library has no such call)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _probe(payload: bytes, kind: str, threads: int, runs: int) -> dict[str, Any]:
    """Inside the fresh child: load, reset the peak mark, run the step, report the growth."""
    torch.set_num_threads(threads)
    model, inputs, loss_fn = torch.load(io.BytesIO(payload), weights_only=False)
    del payload
    step = make_step(kind, model, inputs, loss_fn)
    # One warm-up step first: the first call pages in kernel code and sets up library pools,
    # one-time costs that depend on the install (measured: 4 MiB in one virtual environment,
    # 18 MiB in another with the same packages), not on the model. Then hand the memory the
    # warm-up freed (activations, gradients) back to the kernel, or the measured steps would
    # reuse those resident pages and show no growth.
    step()
    gc.collect()
    _release_free_heap()
    reset = _reset_peak_rss()
    before = _status_kib("VmRSS")
    for _ in range(runs):
        step()
    if reset:
        peak = _status_kib("VmHWM")
        method = "cpu: peak RSS (VmHWM) growth in a fresh process"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        method = "cpu: ru_maxrss minus RSS before the step, fresh process (upper bound)"
    return {"bytes": max(0, peak - before) * 1024, "method": method}


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read_exactly(fd: int, n: int, timeout_s: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if timeout_s is not None and not select.select([fd], [], [], timeout_s)[0]:
            raise TimeoutError(f"no answer from the memory probe within {timeout_s} s")
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError("the memory probe closed its pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _receive(fd: int, timeout_s: float | None = None) -> Any:
    (n,) = struct.unpack("<Q", _read_exactly(fd, 8, timeout_s))
    return pickle.loads(_read_exactly(fd, n, timeout_s))


def serve() -> None:
    """The probe server: imports torch once, then forks one child per request.

    Started by :func:`cpu_peak_growth` as a separate interpreter. Requests and answers are
    length-prefixed pickles on stdin/stdout; anything else printed goes to stderr. The server
    never runs torch work itself, so its children start without thread pools or cached
    memory.
    """
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    _preload()
    # children's gc.collect() then skips the server's objects: a full collection over them
    # costs half a second and copies every page they live on
    gc.freeze()
    fd_in = sys.stdin.fileno()
    while True:
        try:
            request = _receive(fd_in)
        except EOFError:
            return
        if request is None:
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the fresh child
            os.close(r)
            try:
                result = _probe(*request)
            except BaseException as e:  # noqa: BLE001 - the parent must hear of any failure
                result = {"error": f"{type(e).__name__}: {e}"}
            with os.fdopen(w, "wb") as f:
                _send(f, result)
            os._exit(0)
        os.close(w)
        try:
            result = _receive(r)
        except EOFError:
            result = None
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if result is None:
            code = os.waitstatus_to_exitcode(status)
            result = {"error": f"the child process died (exit code {code}); out of memory?"}
        _send(out, result)


def _preload() -> None:
    """Import (without running anything) what children would otherwise each import again:
    the optimizers (whose constructor imports torch._dynamo, a second of work) and efflab's
    model classes (needed to unpickle a model)."""
    import torch._dynamo  # noqa: F401
    import torch.optim  # noqa: F401

    try:
        from efflab.models import list_models

        list_models()
    except Exception:  # noqa: BLE001 - a broken model module only costs import time later
        pass


class _ProbeServer:
    def __init__(self) -> None:
        env = dict(os.environ)
        # whatever the parent can import (the model's classes), the server can too
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER_CMD],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, request: tuple, timeout_s: float) -> dict[str, Any]:
        _send(self.proc.stdin, request)
        return _receive(self.proc.stdout.fileno(), timeout_s)

    def close(self) -> None:
        if self.alive():
            try:
                _send(self.proc.stdin, None)
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


_SERVER: _ProbeServer | None = None
_SERVER_CMD = "from efflab.measure.memory import serve; serve()"


def _server() -> _ProbeServer:
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        _SERVER = _ProbeServer()
        atexit.register(_SERVER.close)
    return _SERVER


def cpu_peak_growth(model: nn.Module, inputs: tuple[torch.Tensor, ...], kind: str,
                    loss_fn: LossFn | None = None, runs: int = PROBE_RUNS,
                    timeout_s: float = 600.0) -> PeakMemory:
    """Peak RSS growth of ``runs`` steps of ``kind`` in a fresh child process (see module)."""
    if kind not in ("inference", "train_step"):
        raise ValueError(f"kind must be 'inference' or 'train_step', got {kind!r}")
    buf = io.BytesIO()
    try:
        torch.save((model, inputs, loss_fn), buf)
    except Exception as e:  # noqa: BLE001 - an unpicklable model is reported, not fatal
        return PeakMemory(None, "cpu: fresh process",
                          f"not measured: model/inputs/loss could not be sent to a child "
                          f"process ({type(e).__name__}: {e})")
    server = _server()
    try:
        result = server.ask((buf.getvalue(), kind, torch.get_num_threads(), runs), timeout_s)
    except (OSError, EOFError, TimeoutError) as e:
        server.proc.kill()
        return PeakMemory(None, "cpu: fresh process", f"not measured: {type(e).__name__}: {e}")
    if "error" in result:
        return PeakMemory(None, "cpu: fresh process", f"not measured: {result['error']}")
    return PeakMemory(int(result["bytes"]), result["method"])

