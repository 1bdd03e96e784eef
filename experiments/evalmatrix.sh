#!/usr/bin/env bash
# usage: experiments/evalmatrix.sh WEIGHTS OUTDIR  -- evaluates a candidate at several operating points
W=$1; O=$2; mkdir -p $O
run() { name=$1; shift; livetok eval ../shared/data/eval/*.mkv --weights $W --max-frames 48 --threads ${TH:-2} --json "$@" > $O/$name.json 2>$O/$name.err
  python -c "import json; o=json.load(open('$O/$name.json'))['overall']; print('$name', round(o['psnr'],3), round(o['ssim'],4), round(o['bits_per_frame']), round(o['tokens_per_frame']), round(o['decodes_per_frame'],2), round(o['encode_ms'],1))"; }
run fixed1 --policy fixed --rate 1.0
run infotok05 --policy infotok --rate 0.5
run learned05 --policy learned --rate 0.5
#run bits05 --policy infotok --rate 0.5 --signal bits
#run infotok025 --policy infotok --rate 0.25
run learned025 --policy learned --rate 0.25
run learned0125 --policy learned --rate 0.125
run learned00625 --policy learned --rate 0.0625
run learned003125 --policy learned --rate 0.03125
# below 1/32 the curve is steep (skips and the N/16 floor) and x264's ratio is at its best there (twentieth session)
run learned0025 --policy learned --rate 0.025
run learned00208 --policy learned --rate 0.0208333
