#!/bin/sh
# The whole training run of the default model: data, then the stages two at
# a time on one thread each (CLIP beside the upsampler, which needs nothing
# from it; then the prior beside the decoder, which both need CLIP's
# features), each for its planned minutes of training (total per stage, so
# a rerun resumes where the last one stopped), then export to models/ and
# a PyTorch sample judged by shapes-eval. Run from anywhere; logs in
# $RUNS/run_all.log.
#
#   nohup nice -n 10 sh train/run_all.sh > train/runs/run_all.out 2>&1 &
#
# Minutes per stage (training-loop time, CPU time of its one thread;
# override with the environment):
CLIP_MIN=${CLIP_MIN:-60}
PRIOR_MIN=${PRIOR_MIN:-20}
DECODER_MIN=${DECODER_MIN:-330}
SR_MIN=${SR_MIN:-63}
RUNS=${RUNS:-train/runs}           # checkpoints and logs
OUT=${OUT:-models}                 # where the model files go
PY=${PYTHON:-/usr/bin/python3}     # Debian's python3 with python3-torch
ARGS=${TRAIN_ARGS:-}               # more train.py options (--smoke: a quick test of this script)
export OMP_WAIT_POLICY=PASSIVE

set -e
cd "$(dirname "$0")/.."
mkdir -p "$RUNS"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*" | tee -a "$RUNS/run_all.log"; }
train() {  # stage minutes
    log "run_all: $1 to $2 minutes"
    $PY train/train.py "$1" $ARGS --runs "$RUNS" --threads 1 --total-minutes "$2" --plan-minutes "$2"
    log "run_all: $1 done"
}

if [ ! -x build/train/bin/shapes-render ] || [ ! -x build/train/bin/shapes-eval ]; then
    make BUILD=build/train BIN=build/train/bin build/train/bin/shapes-render build/train/bin/shapes-eval
fi
log "run_all: start (clip $CLIP_MIN, sr $SR_MIN, prior $PRIOR_MIN, decoder $DECODER_MIN minutes; runs $RUNS)"
$PY train/train.py data $ARGS
train sr "$SR_MIN" & sr=$!
train clip "$CLIP_MIN"
wait $sr
# the prior computes CLIP's features of the scenes and caches them; the
# decoder starts once the prior has begun training
started() { grep -c 'training to' "$RUNS/prior/log.txt" 2> /dev/null || true; }
n=$(started)
train prior "$PRIOR_MIN" & prior=$!
while [ "$(started)" = "$n" ] && kill -0 $prior 2> /dev/null; do sleep 5; done
train decoder "$DECODER_MIN"
wait $prior
$PY train/train.py export --runs "$RUNS" --out "$OUT"
log "run_all: exported to $OUT/"
$PY train/sample.py --models "$OUT" --n 48 --seed 1 --out "$RUNS/sample.png" --eval | tee -a "$RUNS/run_all.log"
log "run_all: done"
