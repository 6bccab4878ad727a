#!/bin/sh
# The whole training run of the default model: data, then the stages on the
# two cores (CLIP beside the upsampler, which needs nothing from it; then
# the decoder beside the rest of the upsampler and the prior, both of which
# need CLIP's features; then the decoder alone on both threads), each to its
# planned step (a total, so a rerun resumes where the last one stopped),
# then export to models/ and a PyTorch sample judged by shapes-eval. Run
# from anywhere; logs in $RUNS/run_all.log. From scratch:
#
#   mkdir -p train/runs/scratch
#   RUNS=train/runs/scratch OUT=train/runs/scratch/models nohup nice -n 10 sh train/run_all.sh > train/runs/scratch/run_all.out 2>&1 &
#
# Steps per stage: config.TRAIN, unless CLIP_STEPS, PRIOR_STEPS,
# DECODER_STEPS or SR_STEPS say otherwise.
RUNS=${RUNS:-train/runs}           # checkpoints and logs
OUT=${OUT:-models}                 # where the model files go
PY=${PYTHON:-/usr/bin/python3}     # Debian's python3 with python3-torch
ARGS=${TRAIN_ARGS:-}               # more train.py options (--smoke: a quick test of this script)
export OMP_WAIT_POLICY=PASSIVE

set -e
cd "$(dirname "$0")/.."
mkdir -p "$RUNS"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*" | tee -a "$RUNS/run_all.log"; }
train() {  # stage steps threads [&]: the last argument & runs it in the background ($! its pid)
    log "run_all: $1 to step ${2:-planned} on $3 thread(s)"
    if [ "${4:-}" = "&" ]; then
        $PY train/train.py "$1" $ARGS --runs "$RUNS" --threads "$3" ${2:+--total-steps "$2"} &
    else
        $PY train/train.py "$1" $ARGS --runs "$RUNS" --threads "$3" ${2:+--total-steps "$2"}
    fi
}

if [ ! -x build/train/bin/shapes-render ] || [ ! -x build/train/bin/shapes-eval ]; then
    make BUILD=build/train BIN=build/train/bin build/train/bin/shapes-render build/train/bin/shapes-eval
fi
log "run_all: start (runs $RUNS)"
$PY train/train.py data $ARGS
train sr "${SR_STEPS:-}" 1 "&"; sr=$!
train clip "${CLIP_STEPS:-}" 1
# the decoder, the longest stage, starts as soon as CLIP is done, on one
# thread, beside the upsampler and then the prior; it computes CLIP's
# features of the scenes and caches them for the prior, which starts once
# the decoder has begun training (it is then stopped, SIGTERM leaving a
# checkpoint, and goes on on both threads)
started() { grep -c 'training to' "$RUNS/decoder/log.txt" 2> /dev/null || true; }
n=$(started)
train decoder "${DECODER_STEPS:-}" 1 "&"; decoder=$!
while [ "$(started)" = "$n" ] && kill -0 $decoder 2> /dev/null; do sleep 5; done
wait $sr
train prior "${PRIOR_STEPS:-}" 1
kill -TERM $decoder 2> /dev/null || true
wait $decoder || true
train decoder "${DECODER_STEPS:-}" 2
$PY train/train.py export --runs "$RUNS" --out "$OUT"
log "run_all: exported to $OUT/"
$PY train/sample.py --models "$OUT" --n 48 --seed 1 --out "$RUNS/sample.png" --eval | tee -a "$RUNS/run_all.log"
log "run_all: done"
