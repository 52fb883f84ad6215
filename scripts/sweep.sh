#!/usr/bin/env bash
# Train a small grid of models (hidden size × learning rate) on a corpus, each for the same time
# budget (--max-seconds), evaluate each on held-out text, and print the results sorted by bits per
# character. An example of driving charrnn from a shell script: --json documents on stdout, -q for
# quiet stderr, exit codes checked.
#
# Settings come from the environment (defaults in brackets):
#   CORPUS          text to train on                        [data/tang300.txt]
#   OUT             folder for the runs                     [sweep-runs]
#   HIDDEN_SIZES    hidden sizes to try                     ["64 128"]
#   LEARNING_RATES  learning rates to try                   ["0.01 0.02 0.04"]
#   MAX_SECONDS     seconds of training per model           [60]
#   STEPS           at most this many steps per model       [1000000]
#   HELD_OUT_LINES  lines at the end of CORPUS held out     [200]
#   CHARRNN         the charrnn command                     [charrnn]
#   PYTHON          a Python to format the table            [the one running charrnn]
# Any charrnn option can be set too, e.g. CHARRNN_TRAIN_CELL=gru or CHARRNN_TRAIN_BATCH_SIZE=16.
set -euo pipefail

CORPUS=${CORPUS:-data/tang300.txt}
OUT=${OUT:-sweep-runs}
HIDDEN_SIZES=${HIDDEN_SIZES:-"64 128"}
LEARNING_RATES=${LEARNING_RATES:-"0.01 0.02 0.04"}
MAX_SECONDS=${MAX_SECONDS:-60}
STEPS=${STEPS:-1000000}
HELD_OUT_LINES=${HELD_OUT_LINES:-200}
CHARRNN=${CHARRNN:-charrnn}
PYTHON=${PYTHON:-$(head -n 1 "$(command -v "$CHARRNN")" | sed -n 's/^#!//p')}
PYTHON=${PYTHON:-python3}

mkdir -p "$OUT"
# Hold out the end of the corpus: training never sees it, evaluation scores it.
head -n "-$HELD_OUT_LINES" "$CORPUS" > "$OUT/train.txt"
tail -n "$HELD_OUT_LINES" "$CORPUS" > "$OUT/held_out.txt"

for hidden in $HIDDEN_SIZES; do
  for lr in $LEARNING_RATES; do
    run="$OUT/h${hidden}_lr${lr}"
    echo "training hidden $hidden, learning rate $lr for ${MAX_SECONDS} s -> $run" >&2
    "$CHARRNN" train "$OUT/train.txt" --val-file "$OUT/held_out.txt" \
      --hidden-size "$hidden" --learning-rate "$lr" --max-seconds "$MAX_SECONDS" --steps "$STEPS" \
      --checkpoint-dir "$run" --cache-dir "$OUT/cache" --overwrite --sample-every 0 \
      --json -q > "$run.train.json"
    "$CHARRNN" eval "$run/best.npz" "$OUT/held_out.txt" --json -q > "$run.eval.json"
  done
done

# One row per run, best first. The JSON documents carry everything the table shows.
"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys

rows = []
for train_file in sorted(pathlib.Path(sys.argv[1]).glob("*.train.json")):
    run = train_file.name[: -len(".train.json")]
    trained = json.loads(train_file.read_text(encoding="utf-8"))
    scored = json.loads(train_file.with_name(run + ".eval.json").read_text(encoding="utf-8"))
    rows.append((scored["bits_per_char"], run, trained, scored))
rows.sort(key=lambda row: row[0])
print(f"{'run':<20} {'bits/char':>9} {'perplexity':>10} {'val loss':>9} {'train loss':>10} {'steps':>8} "
      f"{'tokens/s':>9}")
for bits, run, trained, scored in rows:
    print(f"{run:<20} {bits:>9.4f} {scored['perplexity']:>10.2f} {trained['val_loss_nats']:>9.4f} "
          f"{trained['train_loss_nats']:>10.4f} {trained['steps']:>8,} {trained['tokens_per_s']:>9,.0f}")
PY
