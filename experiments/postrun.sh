#!/usr/bin/env bash
# usage: [TH=1] experiments/postrun.sh RUNDIR  -- calibrate RUNDIR/model.safetensors into RUNDIR/cal.safetensors, then eval matrix + static
set -e
R=$1
cp $R/model.safetensors $R/cal.safetensors
# the thread count set before calibrating: two postruns side by side at TH=1 must not oversubscribe the cores
python -c "import torch; torch.set_num_threads(${TH:-2}); from livetok.engine.calibrate import calibrate_file; print(calibrate_file('$R/cal.safetensors', ['../shared/data/train']))"
TH=${TH:-2} bash experiments/evalmatrix.sh $R/cal.safetensors runs/em-$(basename $R)
python -m livetok.bench.static ../shared/data/eval/*.mkv --weights $R/cal.safetensors --threads ${TH:-2} --json > runs/em-$(basename $R)/static.json
python -c "import json; o=json.load(open('runs/em-$(basename $R)/static.json')); print({k: v for k, v in o.get('overall', o).items()})"
