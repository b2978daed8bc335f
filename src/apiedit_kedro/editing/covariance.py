"""Second moments C = E[k kᵀ] of the edited layers' ``down_proj`` inputs, computed once and cached.

The corpus is local and offline: by default the Python standard library's own source files (test
packages excluded), hashed, instead of EasyEdit's Wikipedia download. The corpus is cut into
fixed-size character blocks and the blocks are read in a seeded random order, the way EasyEdit
samples its documents: reading files in path order would fill a small budget with the first few
modules (``_collections_abc.py``) and a large one with codec tables. A smaller budget from the same
seed reads a prefix of the larger one's blocks, so statistics converge as the budget grows. One
hooked forward pass per chunk feeds every needed layer and stops after the highest one. Sums are kept in
float64; solves add a ridge gamma·tr(C)/d_ff·I. Hand-written: no maintained library collects
per-layer key statistics for transformers models.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from apiedit_kedro.editing.architecture import anatomy_of
from apiedit_kedro.editing.fingerprint import model_fingerprint
from apiedit_kedro.editing.hooks import StopForward, capture_inputs, stop_after

__all__ = [
    "CovarianceStats",
    "corpus_files",
    "covariance_layers",
    "default_cache_dir",
    "load_or_compute_covariance",
]

logger = logging.getLogger(__name__)

_HASHES: dict[tuple, str] = {}
_CHARS_PER_TOKEN = 4  # code averages ~3-4 characters per token; windows are cut to max_len anyway
_TEST_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "apiedit_kedro" / "covariance"


@functools.cache
def corpus_files(corpus: str = "stdlib") -> tuple[Path, ...]:
    """Sorted ``.py`` files of the corpus: ``"stdlib"`` or a directory path (memoised per process).

    Test packages and installed third-party packages are pruned while walking.
    """
    root = Path(sysconfig.get_paths()["stdlib"]) if corpus == "stdlib" else Path(corpus)
    if not root.is_dir():
        raise FileNotFoundError(f"covariance corpus {corpus!r}: directory {root} does not exist")
    files = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in _TEST_DIRS]
        files.extend(Path(directory) / name for name in names if name.endswith(".py"))
    if not files:
        raise FileNotFoundError(f"covariance corpus {corpus!r}: no .py files under {root}")
    return tuple(sorted(files))


def corpus_hash(files: Sequence[Path]) -> str:
    """sha256 of the file names and contents; memoised per process on (path, size, mtime)."""
    signature = tuple((str(path), *_stat(path)) for path in files)
    if signature not in _HASHES:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        _HASHES[signature] = digest.hexdigest()[:24]
    return _HASHES[signature]


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def covariance_layers(method_params: dict) -> list[int]:
    """Union of layers whose covariance some configured method needs (MEMIT, PMET, ROME+mom2)."""
    layers: set[int] = set()
    for method, block in method_params.items():
        hparams = (block or {}).get("hparams", block) or {}
        needs = method in ("memit", "pmet") or (method == "rome" and hparams.get("mom2_adjustment"))
        if needs:
            layers.update(int(layer) for layer in hparams.get("layers", []))
    return sorted(layers)


@dataclass
class CovarianceStats:
    """Per-layer sums S_l = Σ k kᵀ (float64) and token counts n_l, plus provenance metadata."""

    sums: dict[int, torch.Tensor]
    counts: dict[int, int]
    metadata: dict[str, str] = field(default_factory=dict)
    _factors: dict[tuple[int, float], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list[int]:
        return sorted(self.sums)

    def _check(self, layer: int) -> None:
        if layer not in self.sums:
            raise KeyError(
                f"covariance has no statistics for layer {layer} (has {self.layers}); recompute it "
                "with the layers of every configured method"
            )

    def second_moment(self, layer: int, ridge: float = 1e-6) -> torch.Tensor:
        """C = S/n + ridge·tr(C)/d_ff·I in float64."""
        self._check(layer)
        moment = self.sums[layer] / max(self.counts[layer], 1)
        size = moment.shape[0]
        trace_scale = float(torch.trace(moment)) / size
        return moment + ridge * trace_scale * torch.eye(size, dtype=torch.float64)

    def solve(self, layer: int, rhs: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
        """C⁻¹ rhs in float64, with C's Cholesky factor cached per (layer, ridge)."""
        key = (layer, ridge)
        if key not in self._factors:
            moment = self.second_moment(layer, ridge)
            self._factors[key] = torch.linalg.cholesky(moment)
            logger.info(
                "covariance layer %d: cond(C) = %.3g", layer, float(torch.linalg.cond(moment))
            )
        column = rhs.to(torch.float64).reshape(rhs.shape[0], -1)
        return torch.cholesky_solve(column, self._factors[key]).reshape(rhs.shape)

    def save(self, path: str | Path) -> None:
        tensors = {f"layer_{layer}.mom2": self.sums[layer].contiguous() for layer in self.layers}
        tensors |= {
            f"layer_{layer}.count": torch.tensor(self.counts[layer]) for layer in self.layers
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(
            tensors, str(path), metadata={key: str(value) for key, value in self.metadata.items()}
        )

    @classmethod
    def load(cls, path: str | Path) -> CovarianceStats:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
        layers = sorted({int(key.split(".")[0].removeprefix("layer_")) for key in tensors})
        return cls(
            sums={layer: tensors[f"layer_{layer}.mom2"] for layer in layers},
            counts={layer: int(tensors[f"layer_{layer}.count"]) for layer in layers},
            metadata=metadata,
        )


@functools.lru_cache(maxsize=16)
def _blocks(files: tuple[Path, ...], max_len: int, seed: int) -> list[tuple[int, int]]:
    """(file index, character offset) of every block of the corpus, in a seeded random order.

    Blocks hold ``_CHARS_PER_TOKEN``·max_len characters, so most fill a ``max_len`` window; only
    file sizes are read here, the text is read when a block is used.
    """
    width = _CHARS_PER_TOKEN * max_len
    blocks = [
        (index, offset)
        for index, path in enumerate(files)
        for offset in range(0, max(path.stat().st_size, 1), width)
    ]
    random.Random(seed).shuffle(blocks)
    return blocks


@functools.cache
def chunk_list_hash(corpus: str, max_len: int, seed: int) -> str:
    """sha256 of the sampled block order (paths and offsets): the chunks a budget reads from."""
    files = corpus_files(corpus)
    digest = hashlib.sha256()
    for index, offset in _blocks(files, max_len, seed):
        digest.update(f"{files[index].name}:{offset};".encode())
    return digest.hexdigest()[:24]


def _chunks(tokenizer, files: Sequence[Path], max_len: int, seed: int) -> Iterator[list[int]]:
    """Token windows of at most ``max_len`` from the sampled blocks, no special tokens (BOS rows
    excluded)."""
    width = _CHARS_PER_TOKEN * max_len
    for index, offset in _blocks(files, max_len, seed):
        text = files[index].read_bytes()[offset : offset + width].decode("utf-8", errors="replace")
        window = tokenizer(text, add_special_tokens=False)["input_ids"][:max_len]
        if len(window) > 1:
            yield window


def tokenizer_identity(tokenizer) -> str:
    """Name, size and the ids of a probe text: two tokenizers that split code alike share it."""
    probe = tokenizer("def f(x):\n    return x ** 2  # ünïcode", add_special_tokens=False)
    return json.dumps([getattr(tokenizer, "name_or_path", ""), len(tokenizer), probe["input_ids"]])


def model_revision(model: nn.Module) -> str:
    return str(getattr(model.config, "_commit_hash", None) or "")


@torch.no_grad()
def collect_covariance(
    model: nn.Module,
    tokenizer,
    layers: Sequence[int],
    *,
    corpus: str = "stdlib",
    token_budget: int = 20_000,
    max_len: int = 1024,
    seed: int = 0,
) -> CovarianceStats:
    """Accumulate S_l and n_l for ``layers`` over sampled corpus chunks until ``token_budget``."""
    if not layers:
        raise ValueError("covariance needs at least one layer; no configured method needs one")
    anatomy = anatomy_of(model)
    layers = sorted({int(layer) for layer in layers})
    modules = [anatomy.down_proj(layer) for layer in layers]
    files = corpus_files(corpus)
    chunks_read = 0
    sums = {
        layer: torch.zeros(m.in_features, m.in_features, dtype=torch.float64)
        for layer, m in zip(layers, modules, strict=True)
    }
    tokens = 0
    started = time.perf_counter()
    device = next(model.parameters()).device
    with capture_inputs(modules) as captured, stop_after(modules[-1]):
        for chunk in _chunks(tokenizer, files, max_len, seed):
            chunks_read += 1
            window = chunk[: token_budget - tokens]
            input_ids = torch.tensor([window], device=device)
            with contextlib.suppress(StopForward):
                model(input_ids=input_ids, use_cache=False)
            for layer, keys in zip(layers, captured, strict=True):
                flat = keys.reshape(-1, keys.shape[-1]).float()
                sums[layer] += (flat.T @ flat).double().cpu()
            tokens += len(window)
            if tokens >= token_budget:
                break
    seconds = time.perf_counter() - started
    logger.info(
        "covariance: %d tokens x %d layers in %.1fs (%.0f tokens/s)",
        tokens,
        len(layers),
        seconds,
        tokens / max(seconds, 1e-9),
    )
    metadata = {
        "model_fingerprint": model_fingerprint(model),
        "layers": json.dumps(layers),
        "corpus": corpus,
        "corpus_hash": corpus_hash(files),
        "chunk_list_hash": chunk_list_hash(corpus, max_len, seed),
        "seed": str(seed),
        "chunks": str(chunks_read),
        "tokenizer": tokenizer_identity(tokenizer),
        "revision": model_revision(model),
        "token_budget": str(token_budget),
        "tokens": str(tokens),
        "max_len": str(max_len),
        "bos_policy": "excluded",
        "dtype": str(next(model.parameters()).dtype),
        "seconds": f"{seconds:.3f}",
    }
    return CovarianceStats(sums=sums, counts=dict.fromkeys(layers, tokens), metadata=metadata)


def cache_key(
    model: nn.Module,
    tokenizer,
    layers: Sequence[int],
    corpus: str,
    token_budget: int,
    max_len: int,
    seed: int = 0,
) -> str:
    # dtype matters: keys of a bf16 forward differ from an fp32 one's, so their C must not mix
    payload = json.dumps(
        [
            model_fingerprint(model),
            str(next(model.parameters()).dtype),
            model_revision(model),
            tokenizer_identity(tokenizer),
            sorted(int(x) for x in layers),
            corpus,
            corpus_hash(corpus_files(corpus)),
            chunk_list_hash(corpus, max_len, seed),
            token_budget,
            max_len,
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_or_compute_covariance(
    model: nn.Module,
    tokenizer,
    layers: Sequence[int],
    *,
    corpus: str = "stdlib",
    token_budget: int = 20_000,
    max_len: int = 1024,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> CovarianceStats:
    """Load the cached statistics for this (model, dtype, tokenizer, layers, sampled chunks,
    budget) or compute and cache them."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(model, tokenizer, layers, corpus, token_budget, max_len, seed)
    path = directory / f"cov_{key}.safetensors"
    if path.exists():
        logger.info("covariance: loading cached statistics from %s", path)
        stats = CovarianceStats.load(path)
        stats.metadata["cache"] = "hit"
        return stats
    stats = collect_covariance(
        model,
        tokenizer,
        layers,
        corpus=corpus,
        token_budget=token_budget,
        max_len=max_len,
        seed=seed,
    )
    stats.save(path)
    stats.metadata["cache"] = "miss"
    logger.info("covariance: cached at %s", path)
    return stats
