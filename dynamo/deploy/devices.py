"""This machine's GPUs and which replica holds which: the local stand-in for the
scheduler's `nvidia.com/gpu` accounting when `run` starts a graph on one box."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

Slot = tuple[str, str, int]  # (graph, service, replica index)


def detect_gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


class DeviceLedger:
    """Devices per replica slot. A slot keeps its devices across restarts (a restarted replica
    finds its GPUs as it left them); a new slot takes the devices held by the fewest slots,
    lowest position first, so devices are shared only when every one is taken, whether the
    slot exists at start or comes with a scale-up; a retired slot gives its devices back."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = list(devices)
        self.held: dict[Slot, list[str]] = {}

    def claim(self, slot: Slot, count: int) -> list[str]:
        if slot not in self.held:
            load = Counter(d for taken in self.held.values() for d in taken)
            order = sorted(range(len(self.devices)), key=lambda i: (load[self.devices[i]], i))
            self.held[slot] = [self.devices[i] for i in order[:min(count, len(self.devices))]]
        return self.held[slot]

    def free(self) -> int:
        """How many devices no slot holds."""
        taken = {d for held in self.held.values() for d in held}
        return sum(d not in taken for d in self.devices)

    def release(self, slot: Slot) -> None:
        self.held.pop(slot, None)
