"""Beam search equals transformers' ``generate(num_beams=4, do_sample=False)``: the same four finished
hypotheses (``num_return_sequences=4``), best first, with the same ``sequences_scores``, for a GPT-2
and a T5 with random weights, every ``length_penalty`` in (1, 0, 2) and ``early_stopping`` in
(False, True, "never"), a negative ``length_penalty``, and a ``repetition_penalty`` above and below 1.

The stop token is one the search meets early (the checks at the end assert that some best
hypotheses stop before ``max_new_tokens`` and that the three ``early_stopping`` modes return
different results), so the comparison covers hypotheses leaving the beam, the pool of finished ones
and each stopping rule; a batch of two prompts checks that one search stopped early stays as it was
while the other goes on.

No near-ties: random tiny models have nearly uniform next-token distributions, where two candidates
could tie within float error and both libraries would be right to differ. Here the vocabulary is small
(24) and the weights spread (GPT-2: ``initializer_range=0.3`` and randomized norms and biases; T5:
randomized norms), so the top log-probabilities of a step lie tenths of a nat apart, far above
float32 error; the seeds and stop tokens were picked among those whose outputs also differ between
the modes.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.generation import beam_search

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NEW, BEAMS, VOCAB = 10, 4, 24
# a negative length_penalty (favouring shorter texts) with the heuristic and the exact stopping rule
CASES = [(alpha, stop) for alpha in (1.0, 0.0, 2.0) for stop in (False, True, "never")] + [
    (-1.0, False),
    (-1.0, "never"),
]
PROMPTS = {"gpt2": [[3, 7, 5, 9], [11, 2, 20, 6]], "t5": [[5, 9, 14, 3, 20], [7, 7, 2, 11, 4]]}
EOS = {"gpt2": 13, "t5": 15}
MORE_STOPS = {"gpt2": [13, 4], "t5": [15, 22]}


def _gpt2(path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, initializer_range=0.3
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # random norms and biases, so that every parameter matters
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return hf


def _t5(path):
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layer_norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + 1.0)
    return hf


def _hypotheses(tokens, eos) -> list[list[tuple[int, ...]]]:
    """Each prompt's hypotheses as tuples of new tokens, cut after their stop token."""
    out = []
    for rows in tokens:
        out.append([tuple(r[: r.index(eos) + 1]) if eos in r else tuple(r) for r in rows.tolist()])
    return out


@pytest.fixture(scope="module", params=["gpt2", "t5"])
def family(request, tmp_path_factory):
    """(name, eqxllm model, transformers' results per case: hypotheses [prompt][beam] and scores)."""
    name = request.param
    hf = {"gpt2": _gpt2, "t5": _t5}[name](None)
    path = tmp_path_factory.mktemp(f"hf-beam-{name}")
    hf.save_pretrained(path)
    ids = torch.tensor(PROMPTS[name])
    skip = 1 if name == "t5" else ids.shape[1]  # the decoder's start token, or the prompt
    ref = {}
    for alpha, stop in CASES:
        with torch.no_grad():
            out = hf.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=BEAMS,
                num_return_sequences=BEAMS, max_new_tokens=NEW, eos_token_id=EOS[name], pad_token_id=EOS[name],
                length_penalty=alpha, early_stopping=stop, return_dict_in_generate=True, output_scores=True,
            )  # fmt: skip
        tokens = out.sequences.reshape(len(ids), BEAMS, -1)[:, :, skip:].numpy()
        ref[alpha, stop] = (_hypotheses(tokens, EOS[name]), out.sequences_scores.reshape(len(ids), BEAMS).numpy())
    return name, eqxllm.from_pretrained(path), ref, hf


@pytest.mark.parametrize(("alpha", "stop"), CASES, ids=[f"lp{a:g}-{s}" for a, s in CASES])
def test_beams_and_scores_equal_transformers(family, alpha, stop):
    name, model, ref, _ = family
    tokens, scores = beam_search(
        model, jnp.asarray(PROMPTS[name]), max_new_tokens=NEW, num_beams=BEAMS, length_penalty=alpha,
        early_stopping=stop, eos_token_id=EOS[name], return_all=True, return_scores=True,
    )  # fmt: skip
    want, want_scores = ref[alpha, stop]
    assert tokens.shape == (2, BEAMS, NEW)
    assert _hypotheses(np.asarray(tokens), EOS[name]) == want
    np.testing.assert_allclose(np.asarray(scores), want_scores, rtol=1e-5, atol=1e-5)
    gaps = np.abs(np.diff(want_scores, axis=1)) / np.abs(want_scores[:, 1:])
    assert np.all(gaps > 1e-3), "near-tied hypotheses: pick another seed"


def test_the_cases_stop_early_and_tell_the_modes_apart(family):
    """The comparisons above prove little unless hypotheses do end early and the stopping rules matter."""
    name, _, ref, _ = family
    best = {case: tuple(beams[0] for beams in hyps) for case, (hyps, _) in ref.items()}
    assert any(len(h) < NEW for hyps in best.values() for h in hyps), "no best hypothesis ends at the stop token"
    assert any(best[a, True] != best[a, False] for a in (1.0, 2.0)), "stopping once the pool is full changes nothing"
    if name == "gpt2":  # the canonical search looks past the heuristic's stop
        assert best[2.0, "never"] != best[2.0, False]


PENALTIES = [(1.5, 1.0, False), (0.6, 2.0, "never")]  # (repetition_penalty, length_penalty, early_stopping)


@pytest.mark.parametrize(("penalty", "alpha", "stop"), PENALTIES, ids=[f"rp{p:g}" for p, _, _ in PENALTIES])
def test_a_repetition_penalty_equals_transformers(family, penalty, alpha, stop):
    """transformers penalises the log-softmax of each beam by the tokens that beam holds (the prompt's for
    GPT-2, the decoder's start token for T5): beams reordered with a seen-set that did not follow its parent,
    or a penalty on the logits, would choose other hypotheses or score them otherwise."""
    name, model, ref, hf = family
    ids = torch.tensor(PROMPTS[name])
    with torch.no_grad():
        out = hf.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=BEAMS, num_return_sequences=BEAMS,
            max_new_tokens=NEW, eos_token_id=EOS[name], pad_token_id=EOS[name], length_penalty=alpha,
            early_stopping=stop, repetition_penalty=penalty, return_dict_in_generate=True, output_scores=True,
        )  # fmt: skip
    skip = 1 if name == "t5" else ids.shape[1]
    want = _hypotheses(out.sequences.reshape(len(ids), BEAMS, -1)[:, :, skip:].numpy(), EOS[name])
    want_scores = out.sequences_scores.reshape(len(ids), BEAMS).numpy()
    tokens, scores = beam_search(
        model, jnp.asarray(PROMPTS[name]), max_new_tokens=NEW, num_beams=BEAMS, length_penalty=alpha,
        early_stopping=stop, repetition_penalty=penalty, eos_token_id=EOS[name], return_all=True, return_scores=True,
    )  # fmt: skip
    assert _hypotheses(np.asarray(tokens), EOS[name]) == want
    np.testing.assert_allclose(np.asarray(scores), want_scores, rtol=1e-5, atol=1e-5)
    assert want != ref[alpha, stop][0], "the penalty changes nothing here"
    gaps = np.abs(np.diff(want_scores, axis=1)) / np.abs(want_scores[:, 1:])
    assert np.all(gaps > 1e-3), "near-tied hypotheses: pick another seed"


def test_several_stop_ids_equal_transformers(family):
    """Two stop ids: either one ends a hypothesis (and the first pads it). transformers then takes
    3 * num_beams candidates a step, as eqxllm does; that differs from 2 * num_beams only when more than
    num_beams of the best 2 * num_beams end at once, which these cases do not reach (not checked here)."""
    name, model, _, hf = family
    stops = MORE_STOPS[name]
    ids = torch.tensor(PROMPTS[name])
    with torch.no_grad():
        out = hf.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=BEAMS, num_return_sequences=BEAMS,
            max_new_tokens=NEW, eos_token_id=stops, pad_token_id=stops[0], length_penalty=0.0,
            return_dict_in_generate=True, output_scores=True,
        )  # fmt: skip
    skip = 1 if name == "t5" else ids.shape[1]
    want = out.sequences.reshape(len(ids), BEAMS, -1)[:, :, skip:].numpy()
    tokens, scores = beam_search(
        model, jnp.asarray(PROMPTS[name]), max_new_tokens=NEW, num_beams=BEAMS, eos_token_id=stops,
        length_penalty=0.0, return_all=True, return_scores=True,
    )  # fmt: skip
    cut = [[_cut(r, stops) for r in rows] for rows in want.tolist()]
    assert [[_cut(r, stops) for r in rows] for rows in np.asarray(tokens).tolist()] == cut
    assert any(h[-1] == stops[1] for rows in cut for h in rows), "the second stop id ends no hypothesis"
    np.testing.assert_allclose(np.asarray(scores), out.sequences_scores.reshape(len(ids), BEAMS).numpy(), atol=1e-5)


def _cut(row: list[int], stops: list[int]) -> tuple[int, ...]:
    ends = [i for i, t in enumerate(row) if t in stops]
    return tuple(row[: ends[0] + 1]) if ends else tuple(row)
