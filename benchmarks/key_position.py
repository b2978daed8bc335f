"""Where ROME reads its key on code: two choices compared on the embedded Gemma 3 270M.

Code prompts have no natural subject. The benchmark keys every edit on the prompt's last token and
names the API with the shortest unique run of words ending the prompt (`unique_suffix`). The
alternative measured here keys on the enclosing function's name (`function_name`), the last
`def <name>(` of the prompt: a token that names the context, earlier in the prompt. For each of a
seeded sample of the benchmark's own edit requests (one per API, first APIs of `seq_order`), ROME
edits the unedited model once per choice (hyperparameters from conf/base/parameters_editing.yml),
then measures:
- rewrite accuracy (teacher-forced share of target tokens that are the argmax);
- success: the greedy continuation starts with the target call;
- locality: share of the request's locality prompts whose next token is unchanged.

Usage: python benchmarks/key_position.py [--requests 6] [--threads 2]
Reads the latest `edit_requests` under data/ (run `kedro run --pipeline=synthesis` first).
Prints one table and writes benchmarks/results/key_position.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from apiedit_kedro.editing import (
    apply_edits,
    covariance_layers,
    load_or_compute_covariance,
    weight_checksum,
)
from apiedit_kedro.metrics.edit_metrics import locality, next_token_predictions, rewrite_accuracy
from apiedit_kedro.models.loading import load_model

logger = logging.getLogger("key_position")
ROOT = Path(__file__).resolve().parents[1]
RESULT_PATH = ROOT / "benchmarks" / "results" / "key_position.json"


def _latest_requests() -> pd.DataFrame:
    folder = ROOT / "data" / "05_model_input" / "edit_requests.parquet"
    versions = sorted(folder.iterdir()) if folder.exists() else []
    if not versions:
        raise SystemExit("no edit_requests under data/; run `kedro run --pipeline=synthesis` first")
    return pd.read_parquet(versions[-1] / "edit_requests.parquet")


def _function_name_subject(prompt: str) -> str | None:
    names = re.findall(r"def (\w+)\(", prompt)
    return names[-1] if names else None


def _greedy(model, tokenizer, prompt: str, tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "conf/base/parameters_editing.yml").read_text())
    card = {**yaml.safe_load((ROOT / "conf/base/parameters_model.yml").read_text())["model"]}
    card["device"] = "cpu"
    requests = _latest_requests().sort_values(["seq_order", "edit_id"])
    requests = requests.drop_duplicates("api_id")
    requests = requests[requests["prompt"].map(_function_name_subject).notna()]
    requests = requests.head(args.requests).to_dict("records")
    loaded = load_model(card)
    model, tokenizer = loaded.model, loaded.tokenizer
    settings = params["covariance"]
    covariance = load_or_compute_covariance(
        model,
        tokenizer,
        covariance_layers({"rome": params["rome"]}),
        corpus=settings["corpus"],
        token_budget=int(settings["token_budget"]),
        max_len=int(settings["max_len"]),
        cache_dir=ROOT / "data" / "06_models" / "covariance",
    )
    checksum = weight_checksum(model)
    rows = []
    for request in requests:
        prompts = [str(p) for p in request["locality_prompts"]]
        before = next_token_predictions(model, tokenizer, prompts)
        target = str(request["target_new"])
        for choice, subject in (
            ("unique_suffix", str(request["subject"])),
            ("function_name", _function_name_subject(str(request["prompt"]))),
        ):
            edit = {**request, "subject": subject}
            started = time.perf_counter()
            result = apply_edits(
                model,
                tokenizer,
                [edit],
                method="rome",
                hparams=params["rome"],
                covariance=covariance,
            )
            seconds = time.perf_counter() - started
            continuation = _greedy(model, tokenizer, str(request["prompt"]), 16)
            rows.append(
                {
                    "edit_id": request["edit_id"],
                    "api_id": request["api_id"],
                    "choice": choice,
                    "subject": subject,
                    "rewrite_acc": rewrite_accuracy(
                        model, tokenizer, str(request["prompt"]), target
                    ),
                    "success": continuation.startswith(target.lstrip())
                    or continuation.startswith(target),
                    "locality": locality(model, tokenizer, prompts, before),
                    "seconds": seconds,
                }
            )
            result.restore(model)
            assert weight_checksum(model) == checksum, "ROME restore was not exact"
            logger.info("%s %s: %s", request["edit_id"], choice, rows[-1])
    table = pd.DataFrame(rows)
    summary = table.groupby("choice")[["rewrite_acc", "success", "locality", "seconds"]].mean()
    logger.info("key position on %d requests (ROME, Gemma 3 270M):\n%s", len(requests), summary)
    RESULT_PATH.write_text(
        json.dumps({"rows": rows, "summary": summary.reset_index().to_dict("records")}, indent=2)
    )


if __name__ == "__main__":
    main()
