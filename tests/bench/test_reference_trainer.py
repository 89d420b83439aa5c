"""The reference trainer: pandas collation pads each half on its own; its loss is alpha*L1+(1-alpha)*L2."""

from __future__ import annotations

import pytest
import torch
from reference_trainer import (
    IGNORE,
    StepTimer,
    build_reference_trainer,
    count_tokens,
    tokenize_features,
)
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

LABEL = [("predict: two plus two", "4"), ("predict: how many apples are there in three boxes of five", "15")]
RATIONALE = [
    ("explain: two plus two", "Two and two more make four."),
    ("explain: how many apples are there in three boxes of five", "Three boxes with five each is 3 * 5."),
]


def _hand_loss(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """Mean token cross-entropy over non-ignored targets, written out by hand."""
    if shift:  # causal: position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    logp = logits.float().log_softmax(-1)
    keep = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * keep).sum() / keep.sum()


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_collator_pads_each_half_to_its_own_longest(kind, smol_tokenizer):
    feats = tokenize_features(smol_tokenizer, LABEL, RATIONALE, kind)
    from reference_trainer import PandasTaskPrefixCollator

    coll = PandasTaskPrefixCollator(smol_tokenizer, kind)
    batch = coll(feats)
    lab, rat = batch["label"], batch["rationale"]
    assert lab["input_ids"].shape[1] == max(len(f["input_ids"]) for f in feats)
    assert rat["input_ids"].shape[1] == max(len(f["expl_input_ids"]) for f in feats)
    assert rat["labels"].shape[1] == max(len(f["aux_labels"]) for f in feats)
    # Padding positions carry -100 so the built-in loss skips them.
    short = min(range(2), key=lambda i: len(feats[i]["aux_labels"]))
    assert rat["labels"][short, len(feats[short]["aux_labels"]) :].eq(IGNORE).all()
    n_real = sum(len(f["input_ids"]) + len(f["expl_input_ids"]) for f in feats)
    if kind == "seq2seq":
        n_real += sum(len(f["labels"]) + len(f["aux_labels"]) for f in feats)
    assert n_real == count_tokens(lab, kind) + count_tokens(rat, kind)


def test_causal_labels_mask_the_prompt(smol_tokenizer):
    (feat,) = tokenize_features(smol_tokenizer, LABEL[:1], RATIONALE[:1], "causal")
    n_prompt = len(smol_tokenizer("predict: two plus two", add_special_tokens=False)["input_ids"])
    assert feat["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert feat["labels"][n_prompt:] == feat["input_ids"][n_prompt:]
    assert feat["labels"][-1] == smol_tokenizer.eos_token_id


@pytest.mark.parametrize("kind,alpha", [("causal", 0.5), ("seq2seq", 0.3)])
def test_loss_is_alpha_mix_of_two_passes(
    kind, alpha, smol_tokenizer, tiny_causal_dir, tiny_seq2seq_dir, tmp_path
):
    path = tiny_causal_dir if kind == "causal" else tiny_seq2seq_dir
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(path)
    feats = tokenize_features(smol_tokenizer, LABEL, RATIONALE, kind)
    trainer, coll = build_reference_trainer(
        model, smol_tokenizer, feats, kind, out_dir=str(tmp_path), alpha=alpha, batch_size=2, max_steps=1
    )
    batch = coll(feats)
    with torch.no_grad():
        got = trainer.compute_loss(model, batch)
        l1 = _hand_loss(model(**batch["label"]).logits, batch["label"]["labels"], kind == "causal")
        l2 = _hand_loss(model(**batch["rationale"]).logits, batch["rationale"]["labels"], kind == "causal")
    assert got.item() == pytest.approx((alpha * l1 + (1 - alpha) * l2).item(), rel=1e-5)
    assert l1.item() != pytest.approx(l2.item(), rel=1e-3)  # the mix is not trivially one of them


def test_reference_trainer_trains_and_times_steps(smol_tokenizer, tiny_causal_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    feats = tokenize_features(smol_tokenizer, LABEL, RATIONALE, "causal") * 2
    timer = StepTimer()
    trainer, coll = build_reference_trainer(
        model,
        smol_tokenizer,
        feats,
        "causal",
        out_dir=str(tmp_path),
        batch_size=2,
        max_steps=3,
        lr=1e-2,
        callbacks=[timer],
    )
    trainer.train()
    assert len(timer.durations) == 3 and all(d > 0 for d in timer.durations)
    assert [n for n, _ in trainer.step_sizes] == [2, 2, 2]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert set(changed) == set(before)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_reference_loss_equals_our_trainers_loss(
    kind, smol_tokenizer, tiny_causal_dir, tiny_seq2seq_dir, tmp_path, one_step
):
    """Same tokens, same weights: two padded passes with full logits == our one pass at targets."""
    from reference_trainer import PandasTaskPrefixCollator
    from train_speed import reference_features

    from stepdistill.training.batching import encode_examples
    from stepdistill.training.config import TrainConfig
    from stepdistill.training.formatting import LABEL_TASK, RATIONALE_TASK, Pair

    path = tiny_causal_dir if kind == "causal" else tiny_seq2seq_dir
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(path)
    cfg = TrainConfig(method="step_by_step", alpha=0.3)
    examples = [
        [Pair(ls, lt, LABEL_TASK), Pair(rs, rt, RATIONALE_TASK)]
        for (ls, lt), (rs, rt) in zip(LABEL, RATIONALE)
    ]
    encoded = encode_examples(smol_tokenizer, examples, cfg, kind)
    ref_batch = PandasTaskPrefixCollator(smol_tokenizer, kind)(reference_features(encoded, kind))
    trainer, _ = build_reference_trainer(model, smol_tokenizer, [], kind, out_dir=str(tmp_path), alpha=0.3)
    model.eval()
    with torch.no_grad():
        ref = trainer.compute_loss(model, ref_batch)
    ours, _ = one_step(model, kind, encoded, cfg, smol_tokenizer.pad_token_id)  # the training step
    assert ref.item() == pytest.approx(ours["loss"], rel=1e-5)
