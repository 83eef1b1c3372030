#!/usr/bin/env bash
# bash sweeps/smollm2_gpu.sh [seconds]      (BIN=<dir holding the python to use>, default .venv/bin;
#                                            W_TUNE / W_FIG / W_TABLE: runs side by side, default 4 / 3 / 10)
# The SmolLM2 half of issue 11's protocol (and issue 12's Figure 3 row) on one lent GPU: the same make targets as on
# the 2-core CPU — same studies, same tuned configs, same grids, same keys — with more runs side by side, because one
# SmolLM2-135M run uses a sliver of a GPU. Everything resumes: finished trials and cells are kept, and the CPU or a
# later GPU carries on where this stopped.
#   1. the adapter and prompt studies (4 trials each, the budget every method gets) side by side, W_TUNE workers each;
#   2. meanwhile Figure 3 and Figure 2 (they need only full, lora and ours, whose studies are finished), W_FIG each;
#   3. Table 1 once the studies are done (W_TABLE workers; its k = 32 / zero-shot cells that Figure 2 already ran
#      are adopted, not rerun); then that chain and Figure 3's join Figure 2, the longest grid (concurrent grid
#      processes share a grid's cells through the cell locks).
# At most 14-16 processes × 1 thread: the 16-core host feeds the GPU's kernel launches (CPU-bound at this size).
# Stops everything after [seconds] (default 520) with SIGTERM: a running cell is lost, finished ones stay.
set -u
LIMIT=${1:-520}
export BIN=${BIN:-.venv/bin}
M="make -o install BIN=$BIN SETTING=smollm2"   # -o install: the python in BIN is already set up
W_TUNE=${W_TUNE:-4}; W_FIG=${W_FIG:-3}; W_TABLE=${W_TABLE:-10}
mkdir -p logs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# the GGUF is dequantised once into the cache before the workers start (they would race for it otherwise)
$BIN/python -c "from omegaconf import OmegaConf as O; from pathlib import Path; from gradft.models import resolve_path
print(resolve_path(O.load('conf/model/smollm2.yaml'), Path('${GRADFT_CACHE:-$HOME/.cache/gradft}')))"
timeout -s TERM "$LIMIT" bash -c "
  ( $M tune TUNE=adapter GRID_WORKERS=$W_TUNE > logs/tune_adapter.log 2>&1 &
    $M tune TUNE=prompt GRID_WORKERS=$W_TUNE > logs/tune_prompt.log 2>&1 &
    wait
    $M table1 GRID_WORKERS=$W_TABLE > logs/table1.log 2>&1
    $M figure2 GRID_WORKERS=$W_TABLE > logs/figure2_b.log 2>&1 ) &
  ( $M figure3 FIG3_SETTINGS=smollm2 GRID_WORKERS=$W_FIG > logs/figure3.log 2>&1
    $M figure2 GRID_WORKERS=$W_FIG > logs/figure2_c.log 2>&1 ) &
  $M figure2 GRID_WORKERS=$W_FIG > logs/figure2.log 2>&1 &
  wait"
echo "exit $? after ${SECONDS}s"
tail -n 3 logs/*.log
