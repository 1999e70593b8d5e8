"""eqxllm against PyTorch ``transformers``: the same GPT-2 shape, tokenizer, tokens, batch order,
optimizer and schedule, trained for the same wall time on this machine, then both scored on the
whole validation split in bits per byte. Prints one JSON line.

    python benchmarks/peer_train.py --data ../shared/data/tinystories/TinyStories-train-prefix-2MiB.txt \
        --minutes 10 --out runs/peer

eqxllm runs first through ``eqxllm.train.loop.train`` (its budget includes compilation and its
periodic evaluations), then ``transformers`` with ``torch.set_num_threads(os.cpu_count())``.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import eqxllm
from eqxllm.data import batch_at
from eqxllm.train.config import train_preset
from eqxllm.train.evaluate import evaluate_tokens, windows_covering
from eqxllm.train.loop import train
from eqxllm.train.prepare import prepare_data


def torch_run(cfg, data, minutes: float) -> dict:
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(cfg.train.seed)
    m, o, t = cfg.model, cfg.resolved_optim(), cfg.train
    hf_cfg = transformers.GPT2Config(
        vocab_size=data.tokenizer.get_vocab_size(),
        n_positions=m.n_positions,
        n_embd=m.n_embd,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_inner=m.n_inner,
        activation_function=m.activation_function,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=m.layer_norm_epsilon,
        bos_token_id=data.eot,
        eos_token_id=data.eot,
    )
    model = transformers.GPT2LMHeadModel(hf_cfg).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.learning_rate,
        betas=(o.b1, o.b2),
        eps=o.eps,
    )

    def lr_at(step: int) -> float:  # warmup then cosine to min_lr_ratio, as optax.warmup_cosine_decay_schedule
        if step < o.warmup_steps:
            return o.learning_rate * step / max(o.warmup_steps, 1)
        frac = min((step - o.warmup_steps) / max(o.total_steps - o.warmup_steps, 1), 1.0)
        cos = 0.5 * (1 + math.cos(math.pi * frac))
        return o.learning_rate * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cos)

    t0, step = time.time(), 0
    while step < t.max_steps and time.time() - t0 < 60 * minutes:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = torch.from_numpy(
            batch_at(data.train, step, batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed)
        ).long()
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
        opt.step()
        step += 1
    train_s = time.time() - t0
    model.eval()
    windows, mask = windows_covering(data.validation, t.seq_len)
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(windows), t.batch_size):
            w = torch.from_numpy(windows[start : start + t.batch_size]).long()
            mk = torch.from_numpy(mask[start : start + t.batch_size])
            logits = model(w[:, :-1]).logits.float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none")
            valid = mk[:, 1:] & mk[:, :-1]
            total += float(nll[valid].sum())
            count += float(valid.sum())
    return {
        "steps": step,
        "train_s": round(train_s, 1),
        "tokens_per_s": round(step * t.batch_size * t.seq_len / train_s, 1),
        "val_loss": total / count,
        "val_bits_per_byte": total / math.log(2) / data.validation_bytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--preset", default="gpt2-tinystories")
    ap.add_argument("--out", default="runs/peer")
    ap.add_argument("--skip-eqxllm", action="store_true", help="reuse OUT/eqxllm from an earlier run")
    args = ap.parse_args()

    cfg = train_preset(args.preset).for_run(
        data=args.data, out=str(Path(args.out) / "eqxllm"), max_minutes=args.minutes
    )
    load = {"before_eqxllm": os.getloadavg()}
    t0 = time.time()
    export = Path(cfg.out) / "model" if args.skip_eqxllm else train(cfg, progress=False)
    eqx_wall = time.time() - t0
    load["after_eqxllm"] = os.getloadavg()
    data = prepare_data(cfg.data, Path(cfg.out), progress=False)
    model = eqxllm.from_pretrained(export)
    ours = evaluate_tokens(
        model,
        data.validation,
        num_bytes=data.validation_bytes,
        seq_len=cfg.train.seq_len,
        batch_size=cfg.train.batch_size,
    )
    rows = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    steps = max(r["step"] for r in rows if r["kind"] == "train")
    peer = torch_run(cfg, data, args.minutes)
    load["after_transformers"] = os.getloadavg()
    print(
        json.dumps(
            {
                "load_average_1_5_15": load,
                "minutes": args.minutes,
                "preset": args.preset,
                "validation_tokens": int(len(data.validation)),
                "eqxllm": {
                    "steps": steps,
                    "wall_s": round(eqx_wall, 1),
                    "val_loss": ours.loss,
                    "val_bits_per_byte": ours.bits_per_byte,
                },
                "transformers": peer,
            }
        )
    )


if __name__ == "__main__":
    main()
