"""Edit requests (EasyEdit vocabulary) and their tokenisation as id spans.

Sequences are built by concatenating token-id lists (prompt ids, then target ids), never by
formatting strings, so braces in code and repeated subjects cannot break them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["EditRequest", "EncodedRequest", "RequestError", "encode_request", "parse_requests"]


class RequestError(ValueError):
    """An edit request is malformed; the message names the request and the fix."""


@dataclass(frozen=True)
class EditRequest:
    """One edit: make ``prompt`` continue with ``target_new``; ``subject`` marks the key token."""

    prompt: str
    target_new: str
    subject: str = ""
    edit_id: str = ""
    rephrase_prompts: tuple[str, ...] = ()
    locality_prompts: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: Mapping, index: int) -> EditRequest:
        def text(key: str) -> str:
            value = record.get(key)
            return "" if value is None else str(value)

        def texts(key: str) -> tuple[str, ...]:
            value = record.get(key)
            if value is None:
                return ()
            if isinstance(value, str):
                return (value,)
            return tuple(str(item) for item in value)

        return cls(
            prompt=text("prompt"),
            target_new=text("target_new"),
            subject=text("subject"),
            edit_id=text("edit_id") or f"request[{index}]",
            rephrase_prompts=texts("rephrase_prompts"),
            locality_prompts=texts("locality_prompts"),
        )


@dataclass(frozen=True)
class EncodedRequest:
    """Token ids of one request; ``key_index`` is the key token's position inside ``prompt_ids``."""

    request: EditRequest
    prompt_ids: list[int]
    target_ids: list[int]
    key_index: int
    kl_ids: list[int] = field(default_factory=list)
    kl_key_index: int = 0

    @property
    def full_ids(self) -> list[int]:
        return self.prompt_ids + self.target_ids

    @property
    def label(self) -> tuple[int, ...]:
        return tuple(self.target_ids)


def _encode(tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def target_ids_after(tokenizer, prompt: str, prompt_ids: list[int], target: str) -> list[int]:
    """ids(prompt ⊕ target) minus ids(prompt); separately tokenised when the prefix property fails."""
    full = _encode(tokenizer, prompt + target, special=True)
    if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        return full[len(prompt_ids) :]
    return _encode(tokenizer, target, special=False)


def _key_index(tokenizer, request: EditRequest, prompt_ids: list[int], index: int) -> int:
    """Position of the subject's last token (its last occurrence); the last prompt token by default."""
    if not request.subject:
        return len(prompt_ids) - 1
    start = request.prompt.rfind(request.subject)
    if start < 0:
        raise RequestError(
            f"edit request {index} ({request.edit_id}): subject {request.subject!r} does not occur "
            "in its prompt; fix the subject (or leave it empty to key on the last prompt token)"
        )
    end = start + len(request.subject)
    encoded = tokenizer(request.prompt, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    # the last token that starts before the subject's end holds its last character
    candidates = [i for i, (lo, hi) in enumerate(offsets) if hi > lo and lo < end]
    return candidates[-1] if candidates else len(prompt_ids) - 1


def _kl_sequence(tokenizer, request: EditRequest) -> tuple[list[int], int]:
    """'{subject} is a' with the key on the subject's last token (ROME's essence-drift prompt)."""
    words = request.prompt.split()
    subject = request.subject or (words[-1] if words else request.prompt)
    subject_ids = _encode(tokenizer, subject, special=True)
    suffix_ids = target_ids_after(tokenizer, subject, subject_ids, " is a")
    return subject_ids + suffix_ids, len(subject_ids) - 1


def context_length(model) -> int:
    config = model.config
    return int(getattr(config, "max_position_embeddings", 0) or 2**31)


def encode_request(tokenizer, request: EditRequest, index: int, max_length: int) -> EncodedRequest:
    """Tokenise and validate one request; raises RequestError naming it on bad input."""
    if not request.prompt:
        raise RequestError(
            f"edit request {index} ({request.edit_id}): empty prompt; give the code context"
        )
    if not request.target_new or not request.target_new.strip():
        raise RequestError(
            f"edit request {index} ({request.edit_id}): empty target_new; give the new-API call text"
        )
    prompt_ids = _encode(tokenizer, request.prompt, special=True)
    target_ids = target_ids_after(tokenizer, request.prompt, prompt_ids, request.target_new)
    if len(prompt_ids) + len(target_ids) > max_length:
        raise RequestError(
            f"edit request {index} ({request.edit_id}): prompt+target is {len(prompt_ids) + len(target_ids)} "
            f"tokens, longer than the model context of {max_length}; shorten the prompt"
        )
    key = _key_index(tokenizer, request, prompt_ids, index)
    kl_ids, kl_key = _kl_sequence(tokenizer, request)
    return EncodedRequest(request, prompt_ids, target_ids, key, kl_ids, kl_key)


def parse_requests(
    records: Iterable[Mapping | EditRequest], tokenizer, max_length: int
) -> list[EncodedRequest]:
    """Validate and encode every request before any editing work starts."""
    encoded = []
    for index, record in enumerate(records):
        request = (
            record if isinstance(record, EditRequest) else EditRequest.from_record(record, index)
        )
        encoded.append(encode_request(tokenizer, request, index, max_length))
    if not encoded:
        raise RequestError("no edit requests given; pass at least one request")
    return encoded


def strip_special_prefix(tokenizer, ids: Sequence[int]) -> list[int]:
    """Drop a leading BOS so a prompt can follow a context prefix that already has one."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = list(ids)
    return ids[1:] if ids and bos is not None and ids[0] == bos else ids
