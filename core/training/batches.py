"""Torch. Rows to model inputs: tokenized rows, padded batches.
"""
from __future__ import annotations

from typing import Callable

import torch


# ---- data ---------------------------------------------------------------------------------------
def encode_rows(df, tokenizer, max_length: int) -> list[dict]:
    """Tokenize a TaskData frame (text, [text_pair], label) without padding (dynamic padding later)."""
    texts = df["text"].astype(str).tolist()
    pairs = df["text_pair"].astype(str).tolist() if "text_pair" in df.columns else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    labels = df["label"].astype(int).tolist()
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": labels[i], "idx": i} for i in range(len(labels))]


def make_collate(pad_id: int) -> Callable[[list[dict]], dict]:
    def collate(rows: list[dict]) -> dict:
        T = max(len(r["input_ids"]) for r in rows)
        B = len(rows)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        tt = torch.zeros((B, T), dtype=torch.long) if "token_type_ids" in rows[0] else None
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            if tt is not None:
                tt[i, :n] = torch.tensor(r["token_type_ids"])
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
                 "idx": torch.tensor([r["idx"] for r in rows], dtype=torch.long)}
        if tt is not None:
            batch["token_type_ids"] = tt
        return batch
    return collate


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
