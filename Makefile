# unclip - DALL-E 2 (unCLIP) as small Unix programs.
#   make                 build every tool into ./bin
#   make check           unit tests, golden cases, shell pipelines
#   make check SAN=1     the same under AddressSanitizer + UBSan
#   make bench           benchmarks (never part of check)
#   make check-real      real-size weights: convert and run each stage (40 min)
#   make eval            the default model's shapes-eval scores (200 captions)
#   make eval-diversity  the default model's layout diversity (20 captions x 16 seeds, variations)
#   make eval-clip       CLIP as an instrument: zero-shot classification,
#                        reranking, the portmanteau probe (about 15 min)
#   make eval-filter     clip-filter's no-triangles policy at the three points
#   make eval-edit       the default model's inpainting and outpainting scores (EDIT_N tasks)
#   make install PREFIX=/usr/local

PREFIX  ?= /usr/local
CC      ?= cc
BLIS_INC ?= /usr/include/x86_64-linux-gnu/blis-pthread
BLIS_LIB ?= /usr/lib/x86_64-linux-gnu/blis-pthread/libblis.a

ifeq ($(FUZZ),1)
CC      := clang
BUILD   := build/fuzz
BIN     := build/fuzz/bin
OPT     := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
else ifeq ($(SAN),1)
BUILD   := build/san
BIN     := build/san/bin
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD   := build/rel
BIN     := bin
OPT     := -O2 -g -march=x86-64-v3
endif

CFLAGS  ?=
# Includes are written from the repository root ("libcommon/nn/ops.h");
# -MMD -MP record each object's headers, so a changed header rebuilds only
# the objects that include it.
CFLAGS  += -std=c11 -Wall -Wextra -Wshadow $(OPT) -iquote . -isystem $(BLIS_INC) -MMD -MP \
           -DUC_SHARE_DIR='"$(PREFIX)/share/unclip"'
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
LDLIBS  := $(BLIS_LIB) -lmsgpackc -lpng -lz -lcjson -lutf8proc -lpthread -lm

LIB_SRC := $(wildcard formats/*.c libcommon/*/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB     := $(BUILD)/libunclip.a
TOOLS   := $(notdir $(basename $(wildcard tools/*.c)))
GOLDEN_SRC := $(wildcard tests/golden-check/*.c)
UNIT    := $(notdir $(basename $(wildcard tests/unit/test_*.c)))
BENCH_SRC := $(wildcard bench/*.c)

all: $(TOOLS:%=$(BIN)/%) $(BIN)/golden-check $(BIN)/unclip-convert

# the converter is a Python script (stdlib + numpy): no PyTorch, no pickle code
# runs; it reads the weight trees from unclip-spec, installed beside it
$(BIN)/unclip-convert: scripts/unclip-convert | $(BIN)/unclip-spec
	@mkdir -p $(BIN)
	install -m 755 $< $@

# every object depends on the compiler and its flags: changing either
# (CC=clang, OPT in this file; -Werror aside) rebuilds them all
$(BUILD)/flags: FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(filter-out -Werror,$(CFLAGS))' | cmp -s - $@ || echo '$(CC) $(filter-out -Werror,$(CFLAGS))' > $@

$(BUILD)/%.o: %.c $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# The tokenizer's HTML tables come from Python's html module: `make regen`
# writes them again (check.sh checks that the committed file is current).
regen:
	python3 libcommon/text/gen_html_entities.py > libcommon/text/html_entities.h.tmp
	mv libcommon/text/html_entities.h.tmp libcommon/text/html_entities.h

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/%: $(BUILD)/tools/%.o $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/golden-check: $(GOLDEN_SRC:%.c=$(BUILD)/%.o) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BIN)/unclip-bench: $(BENCH_SRC:%.c=$(BUILD)/%.o) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/mkmodel: $(BUILD)/tests/tools/mkmodel.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# libFuzzer targets (clang), then the converter's unpickler (fuzz/fuzz_unpickle.py,
# a mutational fuzzer in Python): make fuzz FUZZ_SECONDS=60
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(notdir $(basename $(wildcard fuzz/fuzz_*.c)))
$(BUILD)/fuzz/%: $(BUILD)/fuzz/%.o $(LIB)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz:
	$(MAKE) FUZZ=1 fuzz-run

fuzz-run: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@set -e; mkdir -p $(BUILD)/artifacts; for t in $(FUZZ_TARGETS); do mkdir -p $(BUILD)/corpus/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  if ! $(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/artifacts/$$t- $(BUILD)/corpus/$$t fuzz/corpus/$$t \
	    > $(BUILD)/$$t.log 2>&1; then \
	    grep -E 'ERROR|SUMMARY|artifact' $(BUILD)/$$t.log; echo "fuzz: $$t found a problem"; exit 1; fi; \
	  grep -E '^stat::number_of_executed_units' $(BUILD)/$$t.log; done; \
	echo "== fuzz_unpickle ($(FUZZ_SECONDS) s, Python: the converter's unpickler)"; \
	/usr/bin/python3 fuzz/fuzz_unpickle.py --seconds $(FUZZ_SECONDS) --artifacts $(BUILD)/artifacts || \
	  { echo "fuzz: fuzz_unpickle found a problem"; exit 1; }

unit: $(UNIT:%=$(BUILD)/tests/%)
	@set -e; for t in $^; do echo "== $$t"; $$t; done

golden: $(BIN)/golden-check
	$(BIN)/golden-check --pending tests/golden/PENDING tests/golden

shell: all $(BUILD)/tests/mkmodel
	@set -e; for t in tests/shell/*.sh; do case $$t in */lib.sh) continue;; esac; echo "== $$t"; \
	  BIN=$(BIN) MKMODEL=$(BUILD)/tests/mkmodel TMPROOT=$(BUILD)/tmp sh $$t; done

check: all $(UNIT:%=$(BUILD)/tests/%) $(BUILD)/tests/mkmodel
	sh tests/layers.sh
	@BUILD=$(BUILD) BIN=$(BIN) sh tests/check.sh

# The hostile-input and pipeline tables under ulimit -v at twice the default
# memory budget (2 x 4 GiB): every row must end with its exit status, none
# by a signal (hostile.sh fails a row that does). Not with SAN=1: ASan
# reserves more address space than any such limit.
ULIMIT_KB ?= 8388608
check-ulimit: all $(BUILD)/tests/mkmodel
	ulimit -v $(ULIMIT_KB) && for t in hostile pipes; do \
	  BIN=$(BIN) MKMODEL=$(BUILD)/tests/mkmodel TMPROOT=$(BUILD)/tmp sh tests/shell/$$t.sh || exit 1; done

# Real-size models with random weights (written once to $$UNCLIP_BENCH_DIR,
# default /tmp/unclip-bench, about 14 GB), then PyTorch on the same shapes
# when Debian's python3-torch is installed.
bench: $(BIN)/unclip-bench
	$(BIN)/unclip-bench --torch bench/torch_bench.py

# Real sizes (not part of check): random weights at the released sizes in the
# original layouts, converted and run once per stage; needs 16 GB free disk,
# about 40 minutes on 2 cores (tests/realsize.sh; REALSIZE_DIR picks the place).
REALSIZE_DIR ?=
check-real: all
	BIN=$(BIN) sh tests/realsize.sh $(REALSIZE_DIR)

# The default model's fidelity: pictures for EVAL_N captions drawn from the
# grammar (fixed seed) through the whole pipeline at default settings, judged
# by shapes-eval per caption kind, and with --quality the ground, the
# objects' shapes and the count pictures' sizes. Each stage's output stays
# in $(EVAL) ($(BUILD)/eval unless given). EVAL_DECODER_OPTS, EVAL_SR_OPTS:
# more options of decoder-diffuse and upsample (EVAL_DECODER_OPTS="-S 10
# --sampler dpm++2m").
EVAL_N    ?= 200
EVAL_SEED ?= 1
EVAL      ?= $(BUILD)/eval
EVAL_DECODER_OPTS ?=
EVAL_SR_OPTS ?=
eval: all
	@mkdir -p $(EVAL)
	$(BIN)/shapes-render --random $(EVAL_N) --seed $(EVAL_SEED) --captions-only > $(EVAL)/captions.txt
	$(BIN)/clip-encode < $(EVAL)/captions.txt > $(EVAL)/text.rec
	$(BIN)/prior-sample $(EVAL)/text.rec > $(EVAL)/prior.rec
	$(BIN)/decoder-diffuse -f record $(EVAL_DECODER_OPTS) $(EVAL)/prior.rec > $(EVAL)/decoder.rec
	$(BIN)/upsample -f record $(EVAL_SR_OPTS) $(EVAL)/decoder.rec > $(EVAL)/images.rec
	$(BIN)/shapes-eval --quality $(EVAL)/images.rec > $(EVAL)/scores.txt
	@cat $(EVAL)/scores.txt

# The default model's diversity (scripts/eval-diversity.sh): DIV_N captions
# drawn DIV_SEEDS times each, the spread of their layouts and sizes against
# the world's; and DIV_VAR pictures' DIV_SEEDS variations, judged against
# the caption (EVAL_DECODER_OPTS: more decoder-diffuse options for both).
# Files stay in $(BUILD)/eval-diversity.
DIV_N     ?= 20
DIV_SEEDS ?= 16
DIV_VAR   ?= 4
eval-diversity: all
	DECODER_OPTS="$(EVAL_DECODER_OPTS)" sh scripts/eval-diversity.sh $(BIN) $(BUILD)/eval-diversity $(DIV_N) $(DIV_SEEDS) $(EVAL_SEED) $(DIV_VAR)

# CLIP as an instrument (scripts/eval-clip.sh): zero-shot classification
# of EVAL_CLIP_N rendered scenes among every caption of their kind,
# clip-rank against decoder-diffuse --best-of on 8 candidates for each of
# EVAL_CLIP_R prompts, and clip-lexicon on 50 portmanteaus. Files stay in
# $(BUILD)/eval-clip; EVAL_CLIP_PARTS picks parts (1 2 3).
EVAL_CLIP_N     ?= 600
EVAL_CLIP_R     ?= 26
EVAL_CLIP_PARTS ?= 1 2 3
eval-clip: all
	BIN=$(BIN) OUT=$(BUILD)/eval-clip N=$(EVAL_CLIP_N) R=$(EVAL_CLIP_R) SEED=$(EVAL_SEED) \
	  PARTS="$(EVAL_CLIP_PARTS)" sh scripts/eval-clip.sh

# clip-filter's shipped no-triangles policy on the same kind of run: recall
# and precision of blocking at the text, image embedding and picture points
# (tests/filter-eval.sh; the thresholds were calibrated on EVAL_SEED=2).
eval-filter: all
	BIN=$(BIN) SEED=$(EVAL_SEED) N=$(EVAL_N) sh tests/filter-eval.sh $(BUILD)/eval-filter

# The default model's edits: EDIT_N tasks of shapes-edit (two thirds
# inpainting an object changed in colour, shape or both, one third
# outpainting a half scene to the whole), through the whole pipeline with
# --image/--mask, judged by shapes-eval; the kept pixels are checked at both
# stages (scripts/eval-edit.sh). EDIT_OPTS: more decoder-diffuse options.
EDIT_N    ?= 200
EDIT_SEED ?= 1
EDIT_OPTS ?=
eval-edit: all
	sh scripts/eval-edit.sh $(BIN) $(BUILD)/eval-edit $(EDIT_N) $(EDIT_SEED) $(EDIT_OPTS)

install: all $(BIN)/unclip-bench
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(TOOLS:%=$(BIN)/%) $(BIN)/unclip-convert $(BIN)/unclip-bench $(DESTDIR)$(PREFIX)/bin
	install -m 644 man/man1/*.1 $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 man/man5/*.5 $(DESTDIR)$(PREFIX)/share/man/man5
	if ls models/*.safetensors >/dev/null 2>&1; then \
	  install -d $(DESTDIR)$(PREFIX)/share/unclip/models; \
	  install -m 644 models/*.safetensors $(DESTDIR)$(PREFIX)/share/unclip/models; fi

# Debian 12 packages (run as root). BLIS is the pthreads build, linked
# statically so no other BLIS variant on the machine can take its place.
DEBS := build-essential clang libclang-rt-14-dev libblis-pthread-dev libmsgpack-dev libpng-dev zlib1g-dev \
        libcmocka-dev libcjson-dev libutf8proc-dev python3 python3-numpy qemu-user
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS)

clean:
	rm -rf build bin

.PHONY: FORCE all unit golden shell check check-ulimit check-real bench eval eval-diversity eval-clip eval-filter eval-edit install clean deps fuzz \
        fuzz-run regen layers
.SECONDARY:

FORCE:
