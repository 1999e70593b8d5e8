"""``eqxllm generate --model DIR|HUB_ID --prompt TEXT``: continue a prompt, printing text as it comes.

The model loads with ``eqxllm.from_pretrained`` and the tokenizer from the same directory (or Hub
repository). Sampling is the default (temperature 1, seed 0); ``--greedy`` (or ``--temperature 0``)
picks the most likely token. ``--repetition-penalty`` applies to both, and to beam search. A
``generation_config.json`` beside the model supplies the stop ids and the defaults of
``--temperature``, ``--top-k``, ``--top-p``, ``--min-p``, ``--repetition-penalty`` (and greedy for
``do_sample: false``). ``--num-beams N`` (or ``num_beams`` in ``generation_config.json``, unless it
samples) runs ``transformers``' beam search instead (:func:`eqxllm.generation.beam_search`, with
``--length-penalty``, ``--early-stopping`` and ``--repetition-penalty``) and prints the best text, or
the ``--num-samples`` best. Each of ``--num-samples`` samples starts with the prompt (then `` => ``
for an encoder-decoder, whose text is not a continuation) and uses its own key, ``fold_in(key(seed), i)``, so a run is reproducible
and sample ``i`` does not depend on how many were asked for.

``--chat`` talks to an instruct model: ``--prompt`` becomes one user message (after ``--system``'s
message, if given), laid out by the chat template beside the tokenizer (``chat_template.jinja`` or
``tokenizer_config.json``'s ``chat_template``) exactly as ``transformers``' ``apply_chat_template(...,
add_generation_prompt=True)`` lays it out, and only the reply is printed. The reply stops at the stop ids
above or at the tokenizer's ``eos_token`` (``tokenizer_config.json``), which instruct tokenizers set to
the end-of-turn token (Qwen2.5's ``<|im_end|>``); a checkpoint whose end-of-turn token is neither
(Gemma's ``<end_of_turn>``, its ``eos_token`` being ``<eos>``) needs it in ``generation_config.json``'s
``eos_token_id`` list, which is where ``transformers`` looks too.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.cli._numbers import (
    finite_float,
    non_negative_float,
    positive_float,
    positive_int,
    probability,
    seed,
    unit_interval,
)
from eqxllm.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a model, streaming the text",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hugging Face directory or Hub repo id (with a tokenizer)")
    p.add_argument("--prompt", required=True, help="the text to continue (with --chat: the user's message)")
    p.add_argument(
        "--chat", action="store_true",
        help="instruct models: lay --prompt out as a user message with the tokenizer's chat template and print "
        "only the reply",
    )  # fmt: skip
    p.add_argument("--system", default=None, help="with --chat: a system message before the user's")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate per sample (default 64)")
    p.add_argument(
        "--temperature", type=non_negative_float, default=None, help="softmax temperature; 0 is greedy (default 1)"
    )
    p.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument(
        "--top-p", type=probability, default=None, help="sample from the nucleus of probability p, in (0, 1]"
    )
    p.add_argument(
        "--min-p",
        type=unit_interval,
        default=None,
        help="sample among the tokens at least min-p times as likely as the most likely one, in [0, 1]",
    )
    p.add_argument(
        "--repetition-penalty",
        type=positive_float,
        default=None,
        help="divide the positive logits of tokens already in the text by this (multiply the negative ones); "
        "1 is off, above 1 discourages repeats (default 1; greedy and beam search too)",
    )
    p.add_argument(
        "--num-beams", type=positive_int, default=None,
        help="beam search with this many beams, as transformers' num_beams (default 1: no search)",
    )  # fmt: skip
    p.add_argument(
        "--length-penalty", type=finite_float, default=None,
        help="beam search: a text's score is its log-probability / length ** this (default 1; above 0 favours "
        "longer texts, below 0 shorter)",
    )  # fmt: skip
    p.add_argument(
        "--early-stopping", choices=("true", "false", "never"), default=None,
        help="beam search: stop once num-beams texts are finished (true), once no live beam can beat them "
        "by transformers' heuristic (false, the default), or by the exact bound (never)",
    )  # fmt: skip
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--num-samples", type=positive_int, default=1, help="how many continuations to print (default 1)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    p.add_argument(
        "--chunk-size", type=positive_int, default=8, help="tokens per compiled call while streaming (default 8)"
    )
    p.add_argument(
        "--prefill-chunk", type=positive_int, default=None,
        help="fill the cache with the prompt this many tokens at a time: the same text, with the memory of one "
        "chunk's attention for a long prompt (default: the whole prompt at once)",
    )  # fmt: skip
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqxllm.checkpoints import from_pretrained, load_config
    from eqxllm.checkpoints.generation_config import read_generation_config
    from eqxllm.checkpoints.hub import resolve_pretrained
    from eqxllm.data.tokenizer import load_tokenizer

    out = sys.stdout
    if args.greedy:  # greedy ignores every sampling option: refuse them rather than drop them silently
        sampling = (
            ("--temperature", args.temperature),
            ("--top-k", args.top_k),
            ("--top-p", args.top_p),
            ("--min-p", args.min_p),
        )
        given = [f for f, v in sampling if v is not None]
        if given:
            raise InputError(
                f"--greedy always takes the most likely token; {', '.join(given)} would be ignored: drop one"
            )
    if args.system is not None and not args.chat:
        raise InputError("--system gives a chat's system message: add --chat (or drop --system)")
    directory = resolve_pretrained(args.model, revision=args.revision)
    if load_config(directory).model_type == "t5_vae":
        raise InputError(
            f"--model {args.model} is a T5-VAE, which writes a sentence from a latent code rather than continuing "
            "a prompt: use `eqxllm vae` (encode and decode to reconstruct sentences, interpolate, sample)"
        )
    model = from_pretrained(directory)
    tokenizer = load_tokenizer(directory)
    # generation_config.json fills what the flags leave unset; an explicit sampling flag means sampling
    defaults = read_generation_config(directory)
    explicit = any(v is not None for v in (args.temperature, args.top_k, args.top_p, args.min_p))
    search = beam_options(args, defaults, explicit_sampling=explicit)
    stops = _stop_ids(model, defaults)
    if args.chat:
        prompt, end_of_turn = _chat_prompt_ids(directory, tokenizer, args)
        stops |= end_of_turn
    else:
        prompt = _prompt_ids(tokenizer, args.prompt)
    echo = not args.chat  # a chat prints the reply alone, not the template's text
    if search is not None:
        print_beams(model, tokenizer, prompt, args, search, stops, out, echo=echo)
        return 0
    args.greedy = args.greedy or (defaults.get("do_sample") is False and not explicit)
    args.temperature = defaults.get("temperature", 1.0) if args.temperature is None else args.temperature
    args.top_k = defaults.get("top_k") if args.top_k is None else args.top_k
    args.top_p = defaults.get("top_p") if args.top_p is None else args.top_p
    args.min_p = defaults.get("min_p") if args.min_p is None else args.min_p
    if args.repetition_penalty is None:  # not a sampling option: it applies to greedy decoding too
        args.repetition_penalty = defaults.get("repetition_penalty", 1.0)
    options = (
        {} if args.greedy else dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p)
    )
    options["repetition_penalty"] = args.repetition_penalty
    for i in range(args.num_samples):
        header = f"{'' if i == 0 else chr(10)}--- sample {i + 1} ---\n" if args.num_samples > 1 else ""
        key = None if args.greedy else jax.random.fold_in(jax.random.key(args.seed), i)
        print_stream(model, tokenizer, prompt, args, key, options, out, stops=stops, header=header, echo=echo)
        out.write("\n")
    return 0


def _stop_ids(model, defaults: dict) -> set[int]:
    """The model config's end-of-sequence ids and ``generation_config.json``'s."""
    eos = model.config.eos_token_id
    return set(defaults.get("eos_token_id", [])) | (
        set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
    )


def _prompt_ids(tokenizer, prompt: str) -> jax.Array:
    ids = jnp.asarray(tokenizer.encode(prompt).ids, jnp.int32)
    if ids.shape[0] == 0:
        raise InputError(f"the prompt {prompt!r} encodes to no tokens; give some text")
    return ids


def _chat_prompt_ids(directory, tokenizer, args: argparse.Namespace) -> tuple[jax.Array, set[int]]:
    """The ids of ``--system`` and ``--prompt`` laid out by the chat template, and the tokenizer's
    ``eos_token`` id as a stop id (empty when it has none)."""
    from eqxllm.data.chat import load_chat_templates, render_chat, special_token_id

    templates = load_chat_templates(directory)
    messages = [{"role": "user", "content": args.prompt}]
    if args.system is not None:
        messages.insert(0, {"role": "system", "content": args.system})
    text = render_chat(templates, messages, add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False).ids  # the template writes its own BOS
    if not ids:
        raise InputError(f"the chat template lays the messages out as {text!r}, which encodes to no tokens")
    eos = special_token_id(templates, tokenizer, "eos_token")
    return jnp.asarray(ids, jnp.int32), set() if eos is None else {eos}


_STOPPING = {"true": True, "false": False, "never": "never"}


def beam_options(args: argparse.Namespace, defaults: dict, *, explicit_sampling: bool) -> dict | None:
    """``num_beams``, ``length_penalty``, ``early_stopping``, ``repetition_penalty`` and ``prefill_chunk``
    for a beam search, or ``None`` to sample or decode greedily. The flags win over
    ``generation_config.json``, whose ``num_beams`` applies unless the run samples (a sampling flag, or
    its own ``do_sample: true``: beam sampling is not done, which a note on stderr says) or
    ``--greedy`` asks for one sequence. Conflicting flags raise :class:`InputError`."""
    beams = args.num_beams
    if beams is not None and beams > 1:
        given = [f for f, v in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                ("--top-p", args.top_p), ("--min-p", args.min_p)) if v is not None]  # fmt: skip
        if args.greedy or given:
            raise InputError(
                f"--num-beams {beams} searches for the likeliest text; {', '.join(given) or '--greedy'} would "
                "be ignored: drop one"
            )
    elif beams is None and not (args.greedy or explicit_sampling) and defaults.get("num_beams", 1) > 1:
        if defaults.get("do_sample") is True:
            print(
                f"note: generation_config.json asks for beam sampling (num_beams {defaults['num_beams']}, "
                "do_sample true), which eqxllm does not do; sampling one sequence",
                file=sys.stderr,
            )
        else:
            beams = defaults["num_beams"]
    if beams is None or beams == 1:
        beam_only = [f for f, v in (("--length-penalty", args.length_penalty),
                                    ("--early-stopping", args.early_stopping)) if v is not None]  # fmt: skip
        if beam_only:
            raise InputError(f"{', '.join(beam_only)} set(s) how a beam search scores or stops: add --num-beams N")
        return None
    if args.num_samples > beams:
        raise InputError(f"--num-samples {args.num_samples} asks for more texts than the {beams} beams find")
    stopping, penalty = args.early_stopping, args.repetition_penalty
    return dict(
        num_beams=beams,
        length_penalty=defaults.get("length_penalty", 1.0) if args.length_penalty is None else args.length_penalty,
        early_stopping=defaults.get("early_stopping", False) if stopping is None else _STOPPING[stopping],
        repetition_penalty=defaults.get("repetition_penalty", 1.0) if penalty is None else penalty,
        prefill_chunk=args.prefill_chunk,
    )


def print_beams(
    model, tokenizer, prompt, args: argparse.Namespace, search: dict, stops: set[int], out, *, echo: bool = True
) -> None:
    """The ``--num-samples`` best texts of a beam search, best first, each after the prompt (unless not ``echo``)."""
    from eqxllm.generation import beam_search

    if not stops:
        raise InputError(
            "beam search needs a stop token, and neither the model's config nor generation_config.json names "
            "an eos_token_id"
        )
    found = beam_search(
        model, prompt, max_new_tokens=args.max_new_tokens, eos_token_id=sorted(stops), return_all=True, **search
    )
    shown = (args.prompt + (" => " if model.config.is_encoder_decoder else "")) if echo else ""
    for i, tokens in enumerate(np.asarray(found)[: args.num_samples].tolist()):
        header = f"{'' if i == 0 else chr(10)}--- beam {i + 1} ---\n" if args.num_samples > 1 else ""
        end = next((j for j, t in enumerate(tokens) if t in stops), len(tokens))
        out.write(header + shown + tokenizer.decode(tokens[:end]) + "\n")


def print_stream(
    model,
    tokenizer,
    prompt,
    args,
    key,
    options,
    out,
    stops: set[int] | None = None,
    header: str = "",
    echo: bool = True,
) -> None:
    """Generate with :func:`eqxllm.generation.stream` and print the decoded text as it grows (after
    ``args.prompt`` when ``echo``).

    ``header`` and the prompt are printed once the first chunk has come, so an error in the arguments
    (found when generation starts) is not printed after them. The whole continuation is decoded again after every chunk and only the new suffix printed: a
    byte-level token may hold half a character, which shows as U+FFFD until its other half comes.
    """
    from eqxllm.generation import stream

    if stops is None:
        eos = model.config.eos_token_id
        stops = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
    ids: list[int] = []
    printed = ""
    for i, chunk in enumerate(
        stream(
            model,
            prompt,
            max_new_tokens=args.max_new_tokens,
            chunk_size=args.chunk_size,
            key=key,
            prefill_chunk=getattr(args, "prefill_chunk", None),
            **options,
        )  # fmt: skip
    ):
        if i == 0:  # an encoder-decoder writes a new text, not the prompt's continuation
            shown = args.prompt + (" => " if model.config.is_encoder_decoder else "") if echo else ""
            out.write(header + shown)
        new = np.asarray(chunk).tolist()
        done = next((j for j, t in enumerate(new) if t in stops), None)
        ids.extend(new if done is None else new[:done])  # the stop token and padding are not text
        text = tokenizer.decode(ids)
        ready = text.rstrip("\ufffd")
        if len(ready) > len(printed):
            out.write(ready[len(printed) :])
            out.flush()
            printed = ready
        if done is not None:
            break
    text = tokenizer.decode(ids)
    out.write(text[len(printed) :])
