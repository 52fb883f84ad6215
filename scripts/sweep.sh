#!/usr/bin/env bash
# Train a small grid of models (hidden size × learning rate) on a corpus, each for the same time
# budget (--max-seconds), evaluate each on held-out text, and print the results sorted by bits per
# character. An example of driving charrnn from a shell script: --json documents on stdout, -q for
# quiet stderr, exit codes checked.
#
#   scripts/sweep.sh                     every run in turn, then the table
#   JOBS=4 scripts/sweep.sh              with GNU parallel, 4 runs at a time, then the table
#   sbatch --array=0-5 scripts/sweep.sh  under Slurm: array task i trains grid point i (of
#                                        HIDDEN_SIZES × LEARNING_RATES, in that order) and nothing else
#   scripts/sweep.sh table               the table of the runs in OUT so far (after a Slurm array)
#   scripts/sweep.sh list                the grid points, one "index hidden rate" line each
#
# Settings come from the environment (defaults in brackets):
#   CORPUS          text to train on                        [data/tang300.txt]
#   OUT             folder for the runs                     [sweep-runs]
#   HIDDEN_SIZES    hidden sizes to try                     ["64 128"]
#   LEARNING_RATES  learning rates to try                   ["0.01 0.02 0.04"]
#   MAX_SECONDS     seconds of training per model           [60]
#   STEPS           at most this many steps per model       [1000000]
#   HELD_OUT_LINES  lines at the end of CORPUS held out     [200]
#   JOBS            runs at a time under GNU parallel       [1: one after another, no parallel needed]
#   LAUNCH          a launcher put before "charrnn train"   [none; e.g. "mpiexec -n 2" or "srun" to train
#                   each model on several processes (docs/distributed.md)]
#   CHARRNN         the charrnn command                     [charrnn]
#   PYTHON          a Python to format the table            [the one running charrnn]
# Any charrnn option can be set too, e.g. CHARRNN_TRAIN_CELL=gru or CHARRNN_TRAIN_BATCH_SIZE=16.
# Under Slurm, submit from the checkout (sbatch starts the script in the folder it was submitted from)
# with a time limit above MAX_SECONDS, e.g. sbatch --array=0-5 --time=5 --cpus-per-task=2 scripts/sweep.sh.
set -euo pipefail

CORPUS=${CORPUS:-data/tang300.txt}
OUT=${OUT:-sweep-runs}
HIDDEN_SIZES=${HIDDEN_SIZES:-"64 128"}
LEARNING_RATES=${LEARNING_RATES:-"0.01 0.02 0.04"}
MAX_SECONDS=${MAX_SECONDS:-60}
STEPS=${STEPS:-1000000}
HELD_OUT_LINES=${HELD_OUT_LINES:-200}
JOBS=${JOBS:-1}
LAUNCH=${LAUNCH:-}
CHARRNN=${CHARRNN:-charrnn}
PYTHON=${PYTHON:-$(head -n 1 "$(command -v "$CHARRNN")" | sed -n 's/^#!//p')}
PYTHON=${PYTHON:-python3}
export CORPUS OUT HIDDEN_SIZES LEARNING_RATES MAX_SECONDS STEPS HELD_OUT_LINES LAUNCH CHARRNN PYTHON

# The grid, one "hidden rate" line per point, in a fixed order (a Slurm array task's index picks one).
grid() {
  for hidden in $HIDDEN_SIZES; do
    for lr in $LEARNING_RATES; do
      echo "$hidden $lr"
    done
  done
}

# Hold out the end of the corpus: training never sees it, evaluation scores it. Each file is written
# under a name of its own and renamed into place, so that runs starting together (array tasks, parallel
# jobs) never read a half-written one.
split_corpus() {
  mkdir -p "$OUT"
  if [[ ! -f "$OUT/train.txt" || ! -f "$OUT/held_out.txt" ]]; then
    head -n "-$HELD_OUT_LINES" "$CORPUS" > "$OUT/train.txt.$$"
    tail -n "$HELD_OUT_LINES" "$CORPUS" > "$OUT/held_out.txt.$$"
    mv -f "$OUT/train.txt.$$" "$OUT/train.txt"
    mv -f "$OUT/held_out.txt.$$" "$OUT/held_out.txt"
  fi
}

# One grid point: train for MAX_SECONDS, then score the best checkpoint on the held-out lines.
train_one() {
  local hidden=$1 lr=$2
  local run="$OUT/h${hidden}_lr${lr}"
  echo "training hidden $hidden, learning rate $lr for ${MAX_SECONDS} s -> $run" >&2
  # shellcheck disable=SC2086 # LAUNCH is a command line of its own, split on purpose
  $LAUNCH "$CHARRNN" train "$OUT/train.txt" --val-file "$OUT/held_out.txt" \
    --hidden-size "$hidden" --learning-rate "$lr" --max-seconds "$MAX_SECONDS" --steps "$STEPS" \
    --checkpoint-dir "$run" --cache-dir "$OUT/cache" --overwrite --sample-every 0 \
    --json -q > "$run.train.json" < /dev/null  # mpiexec would pass the script's standard input on
  "$CHARRNN" eval "$run/best.npz" "$OUT/held_out.txt" --json -q > "$run.eval.json"
}

# One row per run, best first. The JSON documents carry everything the table shows.
table() {
  "$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys

rows = []
for train_file in sorted(pathlib.Path(sys.argv[1]).glob("*.train.json")):
    run = train_file.name[: -len(".train.json")]
    scored_file = train_file.with_name(run + ".eval.json")
    if not scored_file.exists() or not scored_file.stat().st_size:
        print(f"{run}: not scored (yet)", file=sys.stderr)
        continue
    trained = json.loads(train_file.read_text(encoding="utf-8"))
    scored = json.loads(scored_file.read_text(encoding="utf-8"))
    rows.append((scored["bits_per_char"], run, trained, scored))
rows.sort(key=lambda row: row[0])
print(f"{'run':<20} {'bits/char':>9} {'perplexity':>10} {'val loss':>9} {'train loss':>10} {'steps':>8} "
      f"{'tokens/s':>9}")
for bits, run, trained, scored in rows:
    print(f"{run:<20} {bits:>9.4f} {scored['perplexity']:>10.2f} {trained['val_loss_nats']:>9.4f} "
          f"{trained['train_loss_nats']:>10.4f} {trained['steps']:>8,} {trained['tokens_per_s']:>9,.0f}")
PY
}

case "${1:-all}" in
  list)
    grid | nl -v 0 -w 1 -s ' '
    ;;
  table)
    table
    ;;
  one)  # one point, named by its hidden size and rate: what GNU parallel runs
    split_corpus
    train_one "$2" "$3"
    ;;
  all)
    split_corpus
    if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
      point=$(grid | sed -n "$((SLURM_ARRAY_TASK_ID + 1))p")
      if [[ -z "$point" ]]; then
        echo "Error: array task $SLURM_ARRAY_TASK_ID is past the grid's $(grid | wc -l) points (--array=0-$(($(grid | wc -l) - 1)))" >&2
        exit 2
      fi
      # shellcheck disable=SC2086 # "hidden rate"
      train_one $point
      exit 0
    fi
    if [[ "$JOBS" -gt 1 ]]; then
      if ! command -v parallel > /dev/null; then
        echo "Error: JOBS=$JOBS needs GNU parallel (apt-get install parallel); or leave JOBS unset" >&2
        exit 2
      fi
      # --halt now,fail=1: the first run that fails ends the sweep with its exit code, as the loop does.
      grid | parallel --jobs "$JOBS" --colsep ' ' --halt now,fail=1 bash "$0" one {1} {2}
    else
      mapfile -t points < <(grid)
      for point in "${points[@]}"; do
        # shellcheck disable=SC2086 # "hidden rate"
        train_one $point
      done
    fi
    table
    ;;
  *)
    echo "Error: unknown command '$1'; use list, table, or nothing (see the top of $0)" >&2
    exit 2
    ;;
esac
