"""Machine records for tests: a tag, a compute capability and device memory are enough."""

from __future__ import annotations


def make_machine(tag: str, cc=None, memory_bytes=None, **fields):
    """A :class:`MachineRecord` with the given tag, compute capability and device memory."""
    from slidesparse.core.hardware import MachineRecord

    return MachineRecord.from_dict(
        {"gpu_tag": tag, "cc": cc, "memory_bytes": memory_bytes, **fields}
    )
