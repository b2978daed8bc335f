"""Model cards: the `model:` block of an environment's parameters, validated into a dataclass.

A card says where the weights come from (`source`), how to load them (dtype, device) and how to
prompt the model (prompt style, context length, extra stop sequences). Sources:

- `tiny`: a tiny random model built in code (`tiny_family`: llama | qwen2 | gemma3), for tests.
- `hub`: a Hugging Face hub id (`hub_id`, optional `revision`), read from the local HF cache only.
- `local`: a directory saved with `save_pretrained` (`path`).
- `gguf_package`: a GGUF file shipped inside an installed Python package (`package`); either a
  file inside it (`gguf_file`, relative to the package directory) or, when `gguf_file` is empty,
  the package's own `assemble()` function, which writes the joined file and returns its path.

Any card may set `path` to a local directory, which then wins over the other source fields:
that is how a hub card is pointed at weights copied onto an offline machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("tiny", "hub", "local", "gguf_package")
PROMPT_STYLES = ("completion", "chat")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelCardError(ValueError):
    """A `model:` parameter block that cannot describe a loadable model."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    source: str
    hub_id: str = ""
    revision: str = ""
    path: str = ""
    package: str = ""
    gguf_file: str = ""
    tiny_family: str = ""
    dtype: str = "auto"
    device: str = "auto"
    prompt_style: str = "completion"
    context_length: int = 2048
    stop_sequences: tuple[str, ...] = ()
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ModelCard:
        """Build and validate a card from the `model:` parameters (a plain mapping)."""
        if isinstance(params, ModelCard):
            return params
        if not isinstance(params, Mapping):
            raise ModelCardError(
                f"model card must be a mapping (the `model:` parameters), got {type(params).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        name = params.get("name", "<unnamed>")
        if unknown:
            raise ModelCardError(
                f"model card {name!r}: unknown key(s) {unknown}; allowed keys are {sorted(known)} "
                "(put free-form settings under `extra:`)"
            )
        values = {key: value for key, value in params.items() if value is not None}
        values["stop_sequences"] = tuple(values.get("stop_sequences", ()))
        values["extra"] = dict(values.get("extra", {}))
        card = cls(**values)
        card.validate()
        return card

    def validate(self) -> None:
        """Raise `ModelCardError` naming the card and the field when the card is inconsistent."""
        label = f"model card {self.name!r}"
        if not self.name:
            raise ModelCardError("model card needs a non-empty `name`")
        _require_choice(label, "source", self.source, SOURCES)
        _require_choice(label, "prompt_style", self.prompt_style, PROMPT_STYLES)
        _require_choice(label, "dtype", self.dtype, DTYPES)
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ModelCardError(
                f"{label}: device must be auto, cpu or cuda[:N], got {self.device!r}"
            )
        if self.context_length <= 0:
            raise ModelCardError(f"{label}: context_length must be positive")
        required = {
            "tiny": "tiny_family",
            "hub": "hub_id",
            "local": "path",
            "gguf_package": "package",
        }
        needed = required[self.source]
        if not getattr(self, needed) and not self.path:
            raise ModelCardError(f"{label}: source {self.source!r} needs `{needed}`")
        if not all(isinstance(stop, str) and stop for stop in self.stop_sequences):
            raise ModelCardError(f"{label}: stop_sequences must be non-empty strings")

    def fingerprint(self) -> str:
        """A short stable hash of everything that changes the model's outputs.

        Device is deliberately excluded (same weights, same dtype), so a cache filled on one
        machine is reused on another; `dtype: auto` is part of the hash as written.
        """
        payload = dataclasses.asdict(self)
        payload.pop("device")
        payload["extra"] = dict(self.extra)
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _require_choice(label: str, field_name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelCardError(
            f"{label}: {field_name} must be one of {', '.join(choices)}, got {value!r}"
        )
