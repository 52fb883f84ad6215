"""How a bidirectional model should train: its look-ahead, and one embedding or one per direction (issue 21).

Each variant trains on the same corpus for the same wall-clock time (``--seconds``; the same size,
seed and settings otherwise) through charrnn's own training step, then fills one masked token of each
held-out line (charrnn fill's bidirectional method, as bench/cloze.py does). Variants:

  look-ahead M   the right-to-left stack reads M tokens past each training window first (0: it starts at
                 the window's end, so a window's last target has no right context)
  own embedding  the right-to-left stack reads its own token embedding W_xe.back instead of sharing W_xe

It prints tokens/s of training, the steps taken, and cloze top-1, top-5 and bits per masked token.

    python -m bench.bidirectional_variants data/tang300.txt --seconds 60
    python -m bench.bidirectional_variants data/devils_dictionary.txt --look-ahead 0,12,25 --seconds 90
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np



def cloze(params, config, tokenizer, window, lines, rng, blanks):
    from charrnn.inference.fill import Filler

    filler = Filler(params, config, tokenizer, window, top_k=tokenizer.vocab_size, blank="\x01")
    index = {t: i for i, t in enumerate(tokenizer.vocab)}
    top1 = top5 = 0
    bits = 0.0
    picked = rng.permutation(len(lines))[:blanks]
    for number in picked.tolist():
        line = lines[number]
        position = int(rng.integers(len(line)))
        text = tokenizer.decode(line[:position]) + "\x01" + tokenizer.decode(line[position + 1 :])
        candidates = filler.fill(text).blanks[0].candidates
        ranked = [index[c.token] for c in candidates]
        top1 += ranked[0] == line[position]
        top5 += line[position] in ranked[:5]
        bits -= math.log2(max(candidates[ranked.index(line[position])].probability, 1e-300))
    return {"top1": top1 / len(picked), "top5": top5 / len(picked), "bits": bits / len(picked)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--look-ahead", default="0,12,25", help="comma-separated look-aheads (0,12,25)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--embed-size", type=int, default=64, help="for the shared/own embedding pair (64)")
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--blanks", type=int, default=300)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.data.corpus import read_corpus
    from charrnn.data.streams import split_streams, split_validation
    from charrnn.data.tokenizer import Tokenizer
    from charrnn.model import backend, network, optim
    from charrnn.training import loop

    tokenizer, ids = Tokenizer.fit(read_corpus([str(args.corpus)]).text, "char")
    train_ids, held = split_validation(ids, 0.05)
    newline = tokenizer.vocab.index("\n")
    lines, current = [], []
    for token in held.tolist()[1:]:
        if token == newline:
            if len(current) >= 5:
                lines.append(current)
            current = []
        else:
            current.append(token)
    variants = [(f"look-ahead {m}", {"look_ahead": int(m)}, {}) for m in args.look_ahead.split(",")]
    variants += [(f"shared embedding {args.embed_size}", {}, {"embed_size": args.embed_size}),
                 (f"own embedding {args.embed_size} per direction", {}, {"embed_size": args.embed_size, "own": True})]
    load = os.getloadavg()[0]
    rows = []
    for name, train_options, model_options in variants:
        own = model_options.pop("own", False)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden_size, cell=args.cell,
                             bidirectional=True, **{"embed_size": 0, **model_options})
        train_config = TrainConfig(max_steps=10**9, rng_seed=args.seed, **train_options).settled(config)
        trainee = loop.new_trainee(config, train_config, backend.select(args.backend))
        if own:  # the backward stack's own table, drawn like the shared one
            trainee.params[f"W_xe{network.BACKWARD}"] = trainee.params["W_xe"][np.random.default_rng(1).permutation(
                tokenizer.vocab_size)].copy()
            trainee.optimizer_state.update(optim.init_state(train_config.optimizer,
                                                            {f"W_xe{network.BACKWARD}": trainee.params["W_xe.back"]}))
            trainee.optimizer_state = {k: v for k, v in trainee.optimizer_state.items() if k != "step"} | (
                {"step": trainee.optimizer_state["step"]} if "step" in trainee.optimizer_state else {})
        streams = split_streams(train_ids, train_config.batch_size, train_config.seq_length)
        started = time.perf_counter()
        steps = 0
        while time.perf_counter() - started < args.seconds:
            loop.train_step(trainee, streams, train_config)
            steps += 1
        seconds = time.perf_counter() - started
        result = cloze(trainee.params, config, tokenizer, train_config.seq_length, lines,
                       np.random.default_rng(args.seed), args.blanks)
        rows.append({"variant": name, "steps": steps, "tokens_per_s": steps * train_config.batch_size
                     * train_config.seq_length / seconds, "parameters": network.count_parameters(trainee.params),
                     **result})
        print(f"[{name}] {steps} steps, cloze top-1 {result['top1']:.1%}", file=sys.stderr)
    if args.json:
        print(json.dumps({"load_average_at_start": load, "settings": {k: str(v) for k, v in vars(args).items()},
                          "rows": rows}, indent=2))
        return 0
    print(f"{args.corpus.name}: bidirectional {args.cell} H={args.hidden_size}, {args.seconds:g} s of training each, "
          f"cloze on {args.blanks} held-out lines; load average at start {load:.1f}")
    print("| variant | parameters | steps | tokens/s | top-1 | top-5 | bits per masked token |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {r['parameters']:,} | {r['steps']:,} | {r['tokens_per_s']:,.0f} | {r['top1']:.1%} "
              f"| {r['top5']:.1%} | {r['bits']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
