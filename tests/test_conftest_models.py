"""The shared tiny models load with plain transformers and run a forward pass."""

from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer


def test_tiny_models_load(tiny_causal_dir, tiny_seq2seq_dir):
    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    enc = tok(["predict: 2 + 3"], return_tensors="pt")
    causal = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    assert causal(**enc).logits.shape[-1] == len(tok)
    s2s = AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq_dir)
    out = s2s(**enc, labels=enc.input_ids)
    assert out.logits.shape[:2] == enc.input_ids.shape
