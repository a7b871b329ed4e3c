# llmux: `make run` and `make test` are all a new machine needs (see README.md).
BUILD      ?= build
TEST_BUILD ?= build-test
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= request upstream config sse json adapters codecs
FUZZ_OUT   ?= $(FUZZ_BUILD)/findings
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CONFIG     ?= conf/llmux.json
IMAGE_BUILD ?= build-image
VERSION    := $(shell grep -o 'llmux VERSION [0-9.]*' CMakeLists.txt | cut -d ' ' -f 3)
IMAGE_TAGS ?= llmux:$(VERSION) llmux:latest
# podman on these machines (rootful, cgroup v1, no systemd) needs the settings of this file
export CONTAINERS_CONF ?= $(CURDIR)/test/containers.conf

.PHONY: all deps test-deps bench-deps build build-test build-fuzz run test fuzz bench bench-tls bench-workers bench-admission soak image clean

all: build

deps:
	@sh deps/install.sh build

test-deps:
	@sh deps/install.sh test
	@if [ ! -f test/node/node_modules/.package-lock.json ] || \
	    [ test/node/package-lock.json -nt test/node/node_modules/.package-lock.json ]; then \
	    echo "installing the npm test clients (openai, @anthropic-ai/sdk, @google/genai, ai, @ai-sdk/openai, @ai-sdk/anthropic) into test/node"; \
	    cd test/node && for try in 1 2 3 4; do \
	        npm ci --no-audit --no-fund --loglevel=error --fetch-retries=5 && break; \
	        [ $$try = 4 ] && exit 1; echo "npm ci failed (network?): trying again"; sleep $$((try * 5)); \
	    done; \
	fi

# The benchmark's extra tools (nginx, gnuplot, taskset) and the Portkey gateway, pinned by
# bench/portkey/package-lock.json and installed into bench/node. Portkey is optional: make bench
# skips it when it cannot be installed.
bench-deps: deps
	@sh deps/install.sh bench
	@if [ ! -f bench/node/node_modules/@portkey-ai/gateway/package.json ]; then \
	    echo "installing the Portkey gateway into bench/node"; \
	    mkdir -p bench/node && cp bench/portkey/package.json bench/portkey/package-lock.json bench/node/ && \
	    (cd bench/node && npm ci --no-audit --no-fund --loglevel=error) || \
	    echo "Portkey could not be installed: make bench will skip it"; \
	fi

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DLLMUX_SANITIZE=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-test: test-deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLLMUX_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)

# The libFuzzer targets of test/fuzz, built with clang (ASan+UBSan, everything instrumented) in
# their own build directory; ctest there runs each target for a few seconds.
build-fuzz: test-deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DLLMUX_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

# The demo: two simulated providers served by mockllm (one healthy, one failing every other
# request) next to llmux on conf/llmux.json. Ctrl-C stops all three.
run: build
	@$(BUILD)/test/mockllm --listen 127.0.0.1:9101 --quiet --script 'tokens=24&tps=20' & echo $$! > $(BUILD)/mock-healthy.pid; \
	 $(BUILD)/test/mockllm --listen 127.0.0.1:9102 --quiet --script 'fail_every=2&status=503' & echo $$! > $(BUILD)/mock-flaky.pid; \
	 trap 'kill $$(cat $(BUILD)/mock-healthy.pid) $$(cat $(BUILD)/mock-flaky.pid) 2>/dev/null' EXIT INT TERM; \
	 $(BUILD)/llmux -c $(CONFIG)

# The container image (README "Containers"): static llmux and mockllm (-DLLMUX_STATIC=ON, cJSON
# from Debian's source package) in $(IMAGE_BUILD)/, then conf/Containerfile FROM scratch, tagged
# $(IMAGE_TAGS). With podman (installed when missing); with docker only when podman is absent
# and a docker daemon answers.
image:
	@sh deps/install.sh image
	@src=$$(sh deps/cjson-source.sh $(IMAGE_BUILD)/cjson) && \
	 cmake -S . -B $(IMAGE_BUILD) -DCMAKE_BUILD_TYPE=Release -DLLMUX_STATIC=ON \
	     -DLLMUX_CJSON_SOURCE=$$src >/dev/null
	@cmake --build $(IMAGE_BUILD) -j $(JOBS) --target llmux mockllm >$(IMAGE_BUILD)/build.log 2>&1 || \
	    { cat $(IMAGE_BUILD)/build.log; exit 1; }
	@rm -rf $(IMAGE_BUILD)/context && mkdir -p $(IMAGE_BUILD)/context && \
	 cp $(IMAGE_BUILD)/llmux $(IMAGE_BUILD)/test/mockllm /etc/ssl/certs/ca-certificates.crt \
	     $(IMAGE_BUILD)/context/ && cp conf/image.json $(IMAGE_BUILD)/context/llmux.json
	@if command -v podman >/dev/null 2>&1; then \
	     podman build -q --format docker $(IMAGE_TAGS:%=-t %) -f conf/Containerfile $(IMAGE_BUILD)/context; \
	 elif docker info >/dev/null 2>&1; then \
	     docker build -q $(IMAGE_TAGS:%=-t %) -f conf/Containerfile $(IMAGE_BUILD)/context; \
	 else \
	     echo "make image: neither podman nor a docker daemon" >&2; exit 1; \
	 fi >/dev/null
	@echo "built $(IMAGE_TAGS)"

test: build-test build-fuzz
	@cd $(TEST_BUILD) && ctest --output-on-failure -j 2 --timeout 300
	@cd $(FUZZ_BUILD) && ctest --output-on-failure -j 2 --timeout 120

# Each fuzz target in turn for FUZZ_SECONDS (make fuzz FUZZ_SECONDS=60 FUZZ_TARGETS=request),
# from its committed corpus; new inputs and crashes go to $(FUZZ_OUT)/<target>/, never into
# the source tree (test/fuzz/README.md: how to fold finds into the corpus).
fuzz: build-fuzz
	@for t in $(FUZZ_TARGETS); do \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS) s: new inputs in $(FUZZ_OUT)/$$t/new"; \
	    sh test/fuzz/run.sh $(FUZZ_BUILD)/test/fuzz/fuzz_$$t $$t $(FUZZ_SECONDS) $(FUZZ_OUT) \
	        2>$(FUZZ_OUT).$$t.log || { tail -n 60 $(FUZZ_OUT).$$t.log; exit 1; }; \
	    grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_OUT).$$t.log | tail -n 1; \
	done

# llmux, nginx and Portkey side by side against a direct connection (bench/README.md).
# Writes bench/results/<date>.md and <date>-latency.png; about 6 minutes.
bench: bench-deps build
	@node bench/run.mjs
	@node bench/tls.mjs

# The TLS-upstream section alone (bench/tls.mjs): writes bench/results/<date>-tls.md.
bench-tls: bench-deps build
	@node bench/tls.mjs

# Requests/s and CPU per request with "workers": 1 and 2 (bench/workers.mjs, ~1 minute).
bench-workers: bench-deps build
	@node bench/workers.mjs

# What a gateway key's limits cost per request: none, shared memory, Redis (bench/admission.mjs,
# ~2 minutes): writes bench/results/<date>-admission.md.
bench-admission: bench-deps build
	@node bench/admission.mjs

# The soak (bench/README.md, "Soak"): a Release llmux in front of four mockllm upstreams under a
# mixed load with failures, aborts, resets and stalls for SOAK_SECONDS (default 180); every answer
# checked, RSS and descriptors sampled each second. Fails on a lost or wrong answer, growth, a
# crash. Writes bench/results/soak-<date>.md.
soak: build
	@sh deps/install.sh test
	@node bench/soak.mjs

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(FUZZ_BUILD) $(IMAGE_BUILD)
