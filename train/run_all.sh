#!/bin/sh
# The whole training run of the default model: data, then each stage for its
# planned minutes of training (total per stage, so a rerun resumes where the
# last one stopped), then export to models/ and a PyTorch sample judged by
# shapes-eval. Run from anywhere; logs in train/runs/.
#
#   nohup nice -n 10 sh train/run_all.sh > train/runs/run_all.out 2>&1 &
#
# Minutes per stage (training-loop time; override with the environment):
CLIP_MIN=${CLIP_MIN:-40}
PRIOR_MIN=${PRIOR_MIN:-20}
DECODER_MIN=${DECODER_MIN:-115}
SR_MIN=${SR_MIN:-35}
PY=${PYTHON:-/usr/bin/python3}   # Debian's python3 with python3-torch
export OMP_WAIT_POLICY=PASSIVE

set -e
cd "$(dirname "$0")/.."
mkdir -p train/runs
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*" | tee -a train/runs/run_all.log; }

if [ ! -x build/train/bin/shapes-render ] || [ ! -x build/train/bin/shapes-eval ]; then
    make BUILD=build/train BIN=build/train/bin build/train/bin/shapes-render build/train/bin/shapes-eval
fi
log "run_all: start (clip $CLIP_MIN, prior $PRIOR_MIN, sr $SR_MIN, decoder $DECODER_MIN minutes)"
$PY train/train.py data
for s in clip:$CLIP_MIN prior:$PRIOR_MIN sr:$SR_MIN decoder:$DECODER_MIN; do
    stage=${s%%:*} min=${s#*:}
    log "run_all: $stage to $min minutes"
    $PY train/train.py "$stage" --total-minutes "$min"
    log "run_all: $stage done"
done
$PY train/train.py export
log "run_all: exported to models/"
$PY train/sample.py --n 48 --seed 1 --out train/runs/sample.png --eval | tee -a train/runs/run_all.log
log "run_all: done"
