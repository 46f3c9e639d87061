#!/usr/bin/env python3
"""Trains the demo Qwen3-MoE (models/tiny-qwen3-moe-novels) on the prepared corpus.

    python3 tools/train_demo/train.py --corpus tools/train_demo/corpus --out OUT [--minutes 5.5]

Reads the corpus written by prepare_corpus.py (train.txt, heldout.txt, manifest.json; the
sums are checked), the tokenizer and config.json from --model-dir, and trains a
Qwen3MoeForCausalLM from a seeded random init: random windows of --seq-len tokens drawn
from the training split, AdamW, linear warm-up then cosine decay to 10% of the peak, bf16
autocast on CUDA (fp32 master weights; fp32 throughout on the CPU), the router's
load-balancing loss at the config's coefficient.

--minutes is the budget of the whole run, start to finish. After a short timed probe the
script fixes the number of steps: as many as fit the budget, but no more than --max-epochs
passes over the training split (or --steps). The schedule is step-based, so a run with the
same --steps and --seed draws the same batches. The
held-out split is evaluated every --eval-every steps; the weights with the lowest
held-out loss are the ones written (the corpus is small, so late steps can overfit).

OUT receives a Hugging Face checkpoint that transformers and moeopt both load:
config.json (the committed one, transformers-4 keys), model.safetensors (bf16, tied
embeddings so no lm_head.weight), tokenizer.json, tokenizer_config.json, and metrics.json
(final train / held-out loss of the written weights, held-out perplexity, steps, tokens).
"""
import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time

T0 = time.time()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SEPARATOR = "<|endoftext|>"


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_split(corpus, name, tok, eos_id):
    """Token ids of one split: each book's ids followed by <|endoftext|>."""
    with open(os.path.join(corpus, name), encoding="utf-8") as f:
        books = [b.strip("\n") for b in f.read().split("\n" + SEPARATOR + "\n")]
    ids = []
    for enc in tok.encode_batch(books, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long), len(books)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


class Batches:
    """Random windows of seq_len + 1 tokens from one token stream, from a seeded generator."""

    def __init__(self, data, seq_len, batch_size, seed, device):
        self.data = data.to(device)
        self.seq_len, self.batch_size, self.device = seq_len, batch_size, device
        self.gen = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on any device
        self.offsets = torch.arange(seq_len + 1, device=device)

    def next(self):
        starts = torch.randint(0, len(self.data) - self.seq_len - 1, (self.batch_size, 1), generator=self.gen)
        rows = self.data[starts.to(self.device) + self.offsets]
        return rows[:, :-1], rows[:, 1:]


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lm_loss(model, x, y, device, with_aux=False):
    with autocast(device):
        out = model(input_ids=x, output_router_logits=with_aux, use_cache=False)
    loss = F.cross_entropy(out.logits.float().reshape(-1, out.logits.size(-1)), y.reshape(-1))
    aux = out.aux_loss if with_aux and out.aux_loss is not None else None
    return loss, aux


@torch.no_grad()
def evaluate(model, data, seq_len, batch_size, device, max_windows=None):
    """Mean next-token loss over consecutive non-overlapping windows of DATA."""
    model.eval()
    n = (len(data) - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    total, count = 0.0, 0
    for b in range(0, n, batch_size):
        idx = range(b, min(n, b + batch_size))
        rows = torch.stack([data[i * seq_len:i * seq_len + seq_len + 1] for i in idx]).to(device)
        loss, _ = lm_loss(model, rows[:, :-1], rows[:, 1:], device)
        total += loss.item() * len(idx)
        count += len(idx)
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def greedy(model, tok, prompt, n, device):
    model.eval()
    ids = tok.encode(prompt, add_special_tokens=False).ids
    for _ in range(n):
        with autocast(device):
            logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1]
        ids.append(int(torch.argmax(logits.float())))
    model.train()
    return tok.decode(ids, skip_special_tokens=False)


def pick_experts_implementation(model, batches, device, requested):
    """grouped_mm where it runs (fwd + bwd under the autocast used here), else eager."""
    choices = ["grouped_mm", "eager"] if requested == "auto" else [requested]
    for impl in choices:
        model.set_experts_implementation(impl)
        try:
            x, y = batches.next()
            loss, aux = lm_loss(model, x[:2], y[:2], device, with_aux=True)
            (loss + aux).backward()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return impl
        except Exception as e:  # noqa: BLE001 - any failure means: try the next one
            log(f"experts implementation {impl} failed here: {type(e).__name__}: {str(e)[:200]}")
            model.zero_grad(set_to_none=True)
    raise SystemExit("no experts implementation runs on this device")


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "norm" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="directory written by prepare_corpus.py")
    ap.add_argument("--out", required=True, help="output checkpoint directory")
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "tiny-qwen3-moe-novels"),
                    help="config.json, tokenizer.json and tokenizer_config.json of the model")
    ap.add_argument("--minutes", type=float, default=5.5, help="wall budget of the whole run")
    ap.add_argument("--steps", type=int, default=0,
                    help="fixed step count (0: as many as fit the budget, at most --max-epochs)")
    ap.add_argument("--max-epochs", type=float, default=20.0,
                    help="cap on the planned steps, in passes over the training split")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=0, help="0: about 25 evaluations in the run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto, cuda or cpu")
    ap.add_argument("--experts", default="auto", choices=["auto", "grouped_mm", "eager"],
                    help="transformers' experts implementation (auto: grouped_mm if it runs, else eager)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = ap.parse_args()

    budget_s = args.minutes * 60.0
    reserve_s = 25.0  # final evaluation, sample and save
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        log(f"device {torch.cuda.get_device_name(device)}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}")
    else:
        log(f"device cpu ({torch.get_num_threads()} threads); torch {torch.__version__}, "
            f"transformers {transformers.__version__}")

    # Corpus: the files must be the ones prepare_corpus.py wrote.
    with open(os.path.join(args.corpus, "manifest.json")) as f:
        manifest = json.load(f)
    for name, want in manifest["files"].items():
        got = sha256(os.path.join(args.corpus, name))
        if got != want:
            raise SystemExit(f"{args.corpus}/{name}: sha256 {got}, manifest says {want}")
    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    eos_id = tok.token_to_id(SEPARATOR)
    train_ids, n_books = load_split(args.corpus, "train.txt", tok, eos_id)
    held_ids, _ = load_split(args.corpus, "heldout.txt", tok, eos_id)
    log(f"corpus: {n_books} books, train {len(train_ids):,} tokens, held-out {len(held_ids):,} tokens "
        f"(vocab {tok.get_vocab_size()})")

    # Model, seeded init in fp32.
    config = Qwen3MoeConfig.from_json_file(os.path.join(args.model_dir, "config.json"))
    if config.vocab_size != tok.get_vocab_size():
        raise SystemExit(f"config vocab_size {config.vocab_size} != tokenizer's {tok.get_vocab_size()}")
    torch.manual_seed(args.seed)
    model = Qwen3MoeForCausalLM(config).to(device)
    model.train()
    n_params = count_params(model)
    log(f"model: {config.num_hidden_layers} layers, hidden {config.hidden_size}, {config.num_experts} experts "
        f"top-{config.num_experts_per_tok}, vocab {config.vocab_size}, tied {config.tie_word_embeddings}: "
        f"{n_params:,} parameters")

    batches = Batches(train_ids, args.seq_len, args.batch_size, args.seed, device)
    probe_batches = Batches(train_ids, args.seq_len, 2, args.seed + 1, device)
    impl = pick_experts_implementation(model, probe_batches, device, args.experts)
    log(f"experts implementation: {impl}")

    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type == "cuda")
    coef = config.router_aux_loss_coef

    def lr_at(step, total):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(step, total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total)
        x, y = batches.next()
        loss, aux = lm_loss(model, x, y, device, with_aux=True)
        total_loss = loss + coef * aux if aux is not None else loss
        opt.zero_grad(set_to_none=True)
        total_loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        return loss, gnorm

    # Probe: time a few steps (their lr is the warm-up's, as in the run itself).
    probe_steps = 10
    total_steps = args.steps or 10 ** 9
    step = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    for _ in range(2):  # first steps pay for allocations and kernel selection
        train_step(step, total_steps)
        step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_probe = time.time()
    for _ in range(probe_steps):
        loss, _ = train_step(step, total_steps)
        step += 1
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.time() - t_probe) / probe_steps
    held_tokens = len(held_ids)
    eval_batch = args.batch_size
    # Time one held-out evaluation: evaluations get at most a tenth of the training time.
    t_eval = time.time()
    held0 = evaluate(model, held_ids, args.seq_len, eval_batch, device)
    eval_s = time.time() - t_eval
    log(f"held-out loss after {step} steps: {held0:.3f} (one evaluation: {eval_s:.1f}s)")
    reserve_s = max(reserve_s, 2.5 * eval_s + 10.0)  # the final two evaluations, samples, save
    left = budget_s - (time.time() - T0) - reserve_s
    n_evals = int(max(1, min(25, 0.1 * left / max(eval_s, 1e-3))))
    if not args.steps:
        fit = int((left - n_evals * eval_s) / step_s)
        cap = int(args.max_epochs * len(train_ids) / (args.batch_size * args.seq_len))
        total_steps = max(step + 1, min(fit, cap))
        log(f"steps: {fit} fit the budget, {cap} make {args.max_epochs:g} epochs")
    eval_every = args.eval_every or max(1, (total_steps - step) // n_evals)
    tokens_per_step = args.batch_size * args.seq_len
    log(f"{step_s * 1000:.1f} ms/step ({tokens_per_step / step_s:,.0f} tokens/s): {total_steps} steps of "
        f"{args.batch_size}x{args.seq_len}, {total_steps * tokens_per_step / len(train_ids):.1f} epochs; "
        f"held-out eval every {eval_every} steps")

    best = {"heldout_loss": float("inf"), "step": -1, "state": None}
    history = []
    deadline = T0 + budget_s - reserve_s
    stopped_early = False
    t_last, loss_acc, loss_n = time.time(), 0.0, 0
    while step < total_steps:
        if time.time() > deadline:
            stopped_early = True
            log(f"time budget reached at step {step} of {total_steps}")
            break
        loss, gnorm = train_step(step, total_steps)
        step += 1
        loss_acc = loss_acc + loss.detach()  # stays on the device: no sync per step
        loss_n += 1
        if step % eval_every == 0 or step == total_steps:
            held = evaluate(model, held_ids, args.seq_len, eval_batch, device)
            train_avg = float(loss_acc) / max(loss_n, 1)
            history.append({"step": step, "train_loss": train_avg, "heldout_loss": held})
            mark = ""
            if held < best["heldout_loss"]:
                best = {"heldout_loss": held, "step": step,
                        "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
                mark = " *"
            dt = time.time() - t_last
            log(f"step {step:5d}/{total_steps}  lr {opt.param_groups[0]['lr']:.2e}  train {train_avg:.3f}  "
                f"held-out {held:.3f} (ppl {math.exp(held):.1f}){mark}  |g| {float(gnorm):.2f}  "
                f"{dt:.1f}s")
            t_last, loss_acc, loss_n = time.time(), 0.0, 0

    if best["state"] is None:  # a run too short for one evaluation
        held = evaluate(model, held_ids, args.seq_len, eval_batch, device)
        best = {"heldout_loss": held, "step": step,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    final_held = evaluate(model, held_ids, args.seq_len, eval_batch, device)
    # Train loss of the same weights, on as many training tokens as the held-out split has
    # (consecutive windows from a seeded offset), so the two numbers compare.
    g = torch.Generator().manual_seed(args.seed + 2)
    n_windows = max(1, (held_tokens - 1) // args.seq_len)
    start = int(torch.randint(0, len(train_ids) - n_windows * args.seq_len - 1, (1,), generator=g))
    final_train = evaluate(model, train_ids[start:start + n_windows * args.seq_len + 1], args.seq_len, eval_batch,
                           device)
    log(f"written weights: step {best['step']}: train {final_train:.3f}, held-out {final_held:.3f} "
        f"(perplexity {math.exp(final_held):.1f})")
    for prompt in ("Once upon a time", "It is a truth universally acknowledged", "The ship"):
        if time.time() > T0 + budget_s - 10:
            log("greedy samples skipped: out of time")
            break
        log(f"greedy: {greedy(model, tok, prompt, 32, device)!r}")

    # Checkpoint: bf16 weights under transformers' names, the committed config and tokenizer.
    os.makedirs(args.out, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(args.model_dir, name), os.path.join(args.out, name))
    for name in ("generation_config.json",):
        path = os.path.join(args.out, name)
        if os.path.exists(path):
            os.remove(path)
    metrics = {
        "train_loss": final_train,
        "heldout_loss": final_held,
        "heldout_perplexity": math.exp(final_held),
        "best_step": best["step"],
        "steps_run": step,
        "steps_planned": total_steps,
        "stopped_by_time": stopped_early,
        "tokens_seen": step * tokens_per_step,
        "train_tokens": len(train_ids),
        "heldout_tokens": held_tokens,
        "epochs": step * tokens_per_step / len(train_ids),
        "params": n_params,
        "seconds_per_step": step_s,
        "wall_seconds": time.time() - T0,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "experts_implementation": impl,
        "args": vars(args),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0]},
        "corpus_files": manifest["files"],
        "history": history,
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    log(f"wrote {args.out} (model.safetensors {size / 1e6:.1f} MB); {time.time() - T0:.0f}s in all")


if __name__ == "__main__":
    main()
