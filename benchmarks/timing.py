"""What the benchmarks share: reading the clock only after the device has finished."""
import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work before reading the clock (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
