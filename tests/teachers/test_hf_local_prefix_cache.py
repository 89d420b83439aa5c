"""The hf_local prefix cache: shared few-shot prefix read once, answers identical to the plain path."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig, MistralForCausalLM

from stepdistill.teachers.base import Prompt, Sampling
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.hf_local import (
    PLAIN_PATH,
    PREFIX_PATH,
    SAMPLES_PATH,
    HFLocalTeacher,
    layout_rows,
    shared_prefix_length,
)

SHOTS = (
    "Q: Ann has 1 pen and buys 2 more. How many pens has she?\nA: 1 + 2 = 3. The answer is ( 1 + 2 ).\n\n"
    "Q: A box holds 6 eggs. How many eggs are in 3 boxes?\nA: 6 * 3 = 18. The answer is ( 6 * 3 ).\n\n"
)
QUESTIONS = [
    "Tom has 3 pens.",
    "A box holds 6 eggs and there are 4 boxes. How many eggs are there in all?",
    "Sam?",
    "Lena has 22 apples and gives Omar 8. How many apples has she left?",
    "12 cookies are shared by 4 friends.",
]
GREEDY = Sampling(max_tokens=10, stop=("\nQ:",))


def prompts(questions=QUESTIONS) -> list[Prompt]:
    return [Prompt(f"{SHOTS}Q: {q}\nA:", ({"role": "user", "content": q},)) for q in questions]


def test_shared_prefix_length_leaves_every_row_a_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token is read live
    assert shared_prefix_length([[1, 2, 3]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1], [1]]) == 0
    assert shared_prefix_length([]) == 0


def test_layout_puts_padding_between_prefix_and_question():
    ids, mask = layout_rows([[1, 2, 3, 4], [1, 2, 5], [1, 2, 6, 7, 8]], prefix_len=2, pad_id=0)
    assert ids == [[1, 2, 0, 3, 4], [1, 2, 0, 0, 5], [1, 2, 6, 7, 8]]
    assert mask == [[1, 1, 0, 1, 1], [1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]


@pytest.fixture(scope="module")
def tiny_teacher(tiny_causal_dir):
    """The tiny decoder with its weights shaken, so that greedy answers differ between prompts (the
    untouched random model repeats one token whatever it reads, which would prove nothing)."""
    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    cfg = TeacherConfig(backend="hf_local", model=str(tiny_causal_dir), batch_size=2, prompt_format="text")
    return model, tok, cfg


def test_prefix_cache_answers_equal_the_plain_path(tiny_teacher):
    model, tok, cfg = tiny_teacher
    cached, plain = HFLocalTeacher(model, tok, cfg), HFLocalTeacher(model, tok, cfg, prefix_cache=False)
    assert cached.prefix_cache and not plain.prefix_cache
    got = [c[0] for c in cached.generate(prompts(), 1, GREEDY)]
    want = [c[0] for c in plain.generate(prompts(), 1, GREEDY)]
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in want] == [10] * 5
    assert len({c.text for c in got}) == 5  # the answers depend on the question
    # Prompt tokens count the whole prompt, shared prefix included, as the plain path does.
    rows = cached.encode(prompts())
    assert [c.prompt_tokens for c in got] == [c.prompt_tokens for c in want] == [len(r) for r in rows]
    # Batches of 2 over 5 prompts: 3 batches, each on its path; the prefix ends where questions begin.
    assert cached.batches == {PREFIX_PATH: 3} and plain.batches == {PLAIN_PATH: 3}
    assert len(cached._prefix[0]) == shared_prefix_length(rows) == len(tok(f"{SHOTS}Q:")["input_ids"])


@pytest.mark.parametrize("shared", [True, False])
def test_samples_of_a_prompt_equal_its_plain_answer_row_for_row(tiny_teacher, shared):
    """The prompt-once path (each prompt read once, its cache expanded to one row per sample) under
    greedy decoding gives every row exactly the plain path's answer to that prompt, with or
    without a cached shared prefix, prompts of different lengths and different sample counts."""
    model, tok, cfg = tiny_teacher
    teacher, plain = HFLocalTeacher(model, tok, cfg), HFLocalTeacher(model, tok, cfg, prefix_cache=False)
    rows = teacher.encode(prompts())
    want = [c[0].text for c in plain.generate(prompts(), 1, GREEDY)]
    counts = [3, 1, 2, 4, 1]
    got = teacher.sample_rows(rows, counts, GREEDY, 0, teacher.prefix_for(rows) if shared else None)
    assert [len(g) for g in got] == counts
    assert [[c.text for c in g] for g in got] == [[w] * n for w, n in zip(want, counts)]
    assert [g[0].prompt_tokens for g in got] == [len(r) for r in rows]


def test_k_samples_read_each_prompt_once(tiny_teacher):
    """annotate.samples: 4 through stream(): one prompt forward per batch over the prompt's own
    tokens (not 4), 4 completions per prompt that differ, and the same ones again under the seed."""
    model, tok, cfg = tiny_teacher
    teacher = HFLocalTeacher(model, tok, cfg.model_copy(update={"batch_size": 8}))
    rows = teacher.encode(prompts())
    prefix_len = shared_prefix_length(rows)
    reads: list[int] = []  # tokens of every forward that reads more than one token
    forward = model.forward

    @functools.wraps(forward)  # generate inspects the signature of forward
    def counting(*args, **kwargs):
        width = kwargs["input_ids"].shape[1]
        if width > 1:
            reads.append(kwargs["input_ids"].shape[0] * width)
        return forward(*args, **kwargs)

    sampling = Sampling(max_tokens=8, temperature=1.0, seed=3)
    model.forward = counting
    try:
        first = teacher.generate(prompts(), 4, sampling)
    finally:
        del model.forward
    # 5 prompts, 8 rows per batch: 2 prompts x 4 samples per batch -> 3 batches; the prefix once.
    assert teacher.batches == {SAMPLES_PATH: 3}
    assert reads[0] == prefix_len  # the shared prefix, read once for the whole call
    own = [len(r) - prefix_len for r in rows]
    widths = [max(own[0:2]), max(own[2:4]), own[4]]  # each batch pads its prompts to the longest
    assert reads[1:] == [n * (w - 1) for n, w in zip([2, 2, 1], widths)]  # all but the last token, once
    assert [len(c) for c in first] == [4] * 5
    assert all(len({c.text for c in per_prompt}) > 1 for per_prompt in first)  # samples differ
    again = HFLocalTeacher(model, tok, cfg.model_copy(update={"batch_size": 8})).generate(
        prompts(), 4, sampling
    )
    assert [[c.text for c in g] for g in again] == [[c.text for c in g] for g in first]


def test_layout_matters(tiny_teacher):
    """Sanity of the equality test: the padded row's answer changes if its padding is attended."""
    model, tok, cfg = tiny_teacher
    teacher = HFLocalTeacher(model, tok, cfg)
    rows = teacher.encode(prompts(QUESTIONS[:3]))
    prefix = teacher.prefix_for(rows)
    right = teacher.generate_rows(rows, GREEDY, 0, prefix)
    inputs = teacher._batch_inputs(rows, prefix)
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])  # padding visible
    with torch.no_grad():
        out = model.generate(**inputs, **teacher._generation_kwargs(GREEDY))
    wrong = tok.decode(out[2, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert wrong != right[2].text  # "Sam?" is the shortest question, so its row carries padding


def test_prefix_is_reused_across_calls_and_one_prompt_alone_stays_plain(tiny_teacher):
    model, tok, cfg = tiny_teacher
    teacher = HFLocalTeacher(model, tok, cfg)
    teacher.generate(prompts(QUESTIONS[:2]), 1, GREEDY)
    first = teacher._prefix
    teacher.generate(prompts(QUESTIONS[2:]), 1, GREEDY)  # e.g. the next split: same exemplars
    assert teacher._prefix is first
    alone = HFLocalTeacher(model, tok, cfg)
    alone.generate(prompts(QUESTIONS[:1]), 1, GREEDY)
    assert alone._prefix is None and alone.batches == {PLAIN_PATH: 1}
    # A prompt that does not start with the stored prefix is answered on the plain path.
    teacher.generate([Prompt("Q: Sam?\nA:", ())], 1, GREEDY)
    assert teacher.batches[PLAIN_PATH] == 1 and teacher._prefix is first


def test_sliding_window_models_take_the_plain_path(smol_tokenizer):
    """A sliding-window cache would drop the prefix's start, so such models are never prefix-cached."""
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=16,
        pad_token_id=smol_tokenizer.pad_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
    )
    tok = AutoTokenizer.from_pretrained(smol_tokenizer.name_or_path)
    tok.padding_side = "left"
    teacher = HFLocalTeacher(
        MistralForCausalLM(cfg).eval(), tok, TeacherConfig(backend="hf_local", model="m")
    )
    assert not teacher.prefix_cache
    out = teacher.generate(prompts(QUESTIONS[:2]), 1, Sampling(max_tokens=3))
    assert [c[0].completion_tokens for c in out] == [3, 3] and teacher.batches == {PLAIN_PATH: 1}


@pytest.mark.slow
def test_smollm2_prefix_cache_gives_the_plain_answers():
    """The embedded SmolLM2 with the shipped arithmetic exemplars: same greedy text on both paths."""
    pytest.importorskip("gguf")
    from stepdistill.tasks.arith import ArithTask
    from stepdistill.teachers.prompting import build_prompt, load_prompt_spec

    cfg = TeacherConfig(backend="hf_local", model="embedded:smollm2", max_tokens=12, batch_size=2)
    task = ArithTask()
    spec = load_prompt_spec(task, cfg)
    questions = ["Tom has 7 stamps and finds 5 more. How many stamps does he have now?", QUESTIONS[3]]
    batch = [build_prompt(spec, task, {"question": q}) for q in questions]
    sampling = Sampling(max_tokens=12, stop=spec.stop)
    teacher = HFLocalTeacher.from_config(cfg)
    try:
        got = [c[0].text for c in teacher.generate(batch, 1, sampling)]
        assert teacher.batches == {PREFIX_PATH: 1} and len(teacher._prefix[0]) > 300  # the exemplars
        teacher.prefix_cache = False
        want = [c[0].text for c in teacher.generate(batch, 1, sampling)]
    finally:
        teacher.close()
    assert got == want and all(got)


@pytest.mark.parametrize("dtype, want", [("auto", torch.float32), ("bfloat16", torch.bfloat16)])
def test_teacher_dtype_sets_the_weights_dtype(tiny_causal_dir, dtype, want):
    cfg = TeacherConfig(backend="hf_local", model=str(tiny_causal_dir), dtype=dtype, batch_size=2)
    teacher = HFLocalTeacher.from_config(cfg)
    try:
        assert {p.dtype for p in teacher.model.parameters()} == {want}
        got = teacher.generate(prompts(QUESTIONS[:2]), 1, GREEDY)
        assert all(c[0].ok for c in got)
    finally:
        teacher.close()
