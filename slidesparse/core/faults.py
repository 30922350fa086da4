"""Classifying cell failures: from an exception message, or from how a worker process died.

The classes are the store's ``error_class`` values. A CUDA error such as an illegal
instruction or an illegal memory access is *sticky*: the CUDA context of the whole process is
dead afterwards, so the worker that saw one must be replaced even though Python survived.
"""

from __future__ import annotations

import re
import signal

# Ordered: the first match wins (an OOM message can mention "CUDA error" too).
_PATTERNS = (
    ("cuda_illegal_instruction", re.compile(r"illegal instruction", re.I)),
    (
        "cuda_illegal_address",
        re.compile(r"illegal memory access|illegal address|misaligned address", re.I),
    ),
    ("oom", re.compile(r"out of memory|OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|MemoryError")),
)
# Messages after which the CUDA context cannot be trusted any more.
_STICKY = re.compile(
    r"illegal instruction|illegal memory access|illegal address|misaligned address|"
    r"unspecified launch failure|device-side assert|CUDA error|cudaError|CUDA_ERROR|"
    r"CUBLAS_STATUS_EXECUTION_FAILED|CUSPARSE_STATUS_EXECUTION_FAILED",
    re.I,
)
_TAIL_CHARS = 2000


def classify_message(message: str) -> str | None:
    """The error class a message names (CUDA illegal instruction/address, OOM), or None."""
    for name, pattern in _PATTERNS:
        if pattern.search(message):
            return name
    return None


def classify_exception(exc: BaseException) -> str:
    """Error class of an exception raised inside a cell."""
    text = f"{type(exc).__name__}: {exc}"
    return classify_message(text) or "error"


def is_sticky(message: str) -> bool:
    """Whether a failure message means the process's CUDA context is no longer usable."""
    return bool(_STICKY.search(message))


def classify_exit(returncode: int | None, stderr_tail: str) -> str:
    """Error class of a worker that died mid-cell, from its exit status and stderr tail.

    A message naming a CUDA fault wins (the runtime often aborts after printing it); a
    SIGKILL we did not send is almost always the kernel's OOM killer; any other death is a
    crash.
    """
    named = classify_message(stderr_tail)
    if named is not None:
        return named
    if returncode is not None and returncode == -signal.SIGKILL:
        return "oom"
    return "crash"


def describe_exit(returncode: int | None) -> str:
    """``"killed by SIGSEGV"`` / ``"exit code 3"`` for a worker's return code."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def tail(text: str, limit: int = _TAIL_CHARS) -> str:
    """The last ``limit`` characters of ``text``, stripped, marked when cut."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def death_message(returncode: int | None, stderr_tail: str) -> str:
    """A failure message for a worker that died: a headline line, then its stderr tail.

    The headline names how it died and the most telling stderr line: a CUDA / OOM message if
    there is one, else Python's "Fatal Python error" line, else the last line printed.
    """
    lines = [ln.strip() for ln in stderr_tail.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("--- cell ")]
    telling = next((ln for ln in lines if classify_message(ln)), None)
    telling = telling or next((ln for ln in lines if ln.startswith("Fatal Python error")), None)
    telling = telling or (lines[-1] if lines else "no output")
    return tail(f"worker {describe_exit(returncode)}: {telling}\n" + "\n".join(lines))
