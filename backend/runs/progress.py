"""Image pull progress: per-layer state from daemon messages -> overall figures.

Tolerates what engines really send (docs/api.md): missing `total`,
`progressDetail: {}`, `units: "s"` (containerd store, no total), and
`current > total`. The overall fraction never goes backwards, stays below 1
while the pull is unfinished and is exactly 1 on the message that ends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_LAYER_ID = re.compile(r"[0-9a-f]{12}")
_DOWNLOAD_WEIGHT = 0.5
_ALMOST_ONE = 0.999


@dataclass(slots=True)
class Layer:
    state: str = "waiting"  # waiting|downloading|verifying|downloaded|extracting|done|exists
    total: int | None = None
    downloaded: int = 0
    extracted: float = 0.0  # fraction 0..1

    @property
    def finished(self) -> bool:
        return self.state in ("done", "exists")

    @property
    def download(self) -> float:
        """How much of the layer has downloaded, 0..1 (0 for a cached layer)."""
        if self.state in ("verifying", "downloaded", "extracting", "done"):
            return 1.0
        return min(self.downloaded / self.total, 1.0) if self.total else 0.0

    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return _DOWNLOAD_WEIGHT * self.download + (1 - _DOWNLOAD_WEIGHT) * self.extracted


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class PullProgress:
    def __init__(self) -> None:
        self.layers: dict[str, Layer] = {}
        self.digest: str | None = None
        self.complete = False
        self.messages = 0
        self._fraction = 0.0

    def update(self, message: dict[str, Any]) -> dict[str, Any]:
        """Fold one daemon message in; return the `pull` event data for it."""
        self.messages += 1
        status = str(message.get("status") or "")
        raw_id = message.get("id")
        layer_id = raw_id if isinstance(raw_id, str) and _LAYER_ID.fullmatch(raw_id) else None
        detail = message.get("progressDetail")
        detail = detail if isinstance(detail, dict) else {}
        current = _int_or_none(detail.get("current"))
        total = _int_or_none(detail.get("total"))
        units = detail.get("units") if isinstance(detail.get("units"), str) else None
        if layer_id is not None:
            self._apply(self.layers.setdefault(layer_id, Layer()), status, current, total, units)
        elif status.startswith("Digest: "):
            self.digest = status[len("Digest: ") :].strip()
        elif status.startswith("Status: "):
            self.complete = True
        data: dict[str, Any] = {
            "layer": layer_id,
            "status": status,
            "current": current,
            "total": total,
            "overall": self.overall(),
        }
        if units is not None:
            data["units"] = units
        return data

    @staticmethod
    def _apply(
        layer: Layer, status: str, current: int | None, total: int | None, units: str | None
    ) -> None:
        if status == "Already exists":
            layer.state = "exists"
        elif status == "Pull complete":
            layer.state = "done"
            if layer.total is not None:
                layer.downloaded = layer.total
            layer.extracted = 1.0
        elif status == "Downloading":
            layer.state = "downloading"
            if total:
                layer.total = total
            if current is not None:
                layer.downloaded = max(layer.downloaded, current)
        elif status in ("Verifying Checksum", "Download complete"):
            layer.state = "verifying" if status.startswith("Verifying") else "downloaded"
            if layer.total is not None:
                layer.downloaded = layer.total
        elif status == "Extracting":
            layer.state = "extracting"
            if layer.total is not None:
                layer.downloaded = layer.total
            # Progress in other units (`units: "s"`, containerd) is no fraction
            # of the layer. The `units` of the event decides, so that every
            # reader of the event (the run page too) comes to the same figure.
            if current is not None and total and units is None:
                layer.extracted = max(layer.extracted, min(current / total, 1.0))
        elif status in ("Pulling fs layer", "Waiting") and not layer.finished:
            layer.state = "waiting"
        # Anything else ("Retrying in N seconds", new texts) leaves state as is.

    def overall(self) -> dict[str, Any]:
        layers = self.layers.values()
        known = [layer.total for layer in layers if layer.total]
        default_weight = sum(known) / len(known) if known else 1.0
        # Cached layers carry no work: counting them would pin the fraction
        # near 1 when the engine reports them before announcing the others.
        weights = [
            (layer.total or default_weight, layer.fraction())
            for layer in layers
            if layer.state != "exists"
        ]
        weight_sum = sum(w for w, _ in weights)
        fraction = sum(w * f for w, f in weights) / weight_sum if weight_sum else 0.0
        fraction = 1.0 if self.complete else min(fraction, _ALMOST_ONE)
        self._fraction = max(self._fraction, fraction)
        return {
            "bytes_done": sum(
                min(layer.downloaded, layer.total or layer.downloaded) for layer in layers
            ),
            "bytes_total": sum(known),
            "layers_done": sum(1 for layer in layers if layer.finished),
            "layers_total": len(self.layers),
            "fraction": round(self._fraction, 4),
        }

    def summary(self) -> dict[str, Any]:
        overall = self.overall()
        return {
            "digest": self.digest,
            "layers_total": overall["layers_total"],
            "layers_cached": sum(1 for layer in self.layers.values() if layer.state == "exists"),
            "bytes_total": overall["bytes_total"],
            "messages": self.messages,
        }
