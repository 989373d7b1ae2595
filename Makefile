# Comet Backup provisioning pipeline: build, test, demo.
# Every binary lands in bin/; objects in build/ (normal) and build-san/
# (AddressSanitizer + UndefinedBehaviorSanitizer, used by `make test`).

PKGS    := librabbitmq libcurl json-c hiredis libconfig libmicrohttpd libsodium libcrypto uuid
CC      ?= cc
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wformat=2 -Wno-format-nonliteral
OPT     ?= -O2 -g
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
CFLAGS_ALL  = $(CSTD) $(WARN) $(OPT) -Icommon -Iworker $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_ALL = $(EXTRA_LDFLAGS)

# BUILD selects the object/binary tree so the sanitizer build never mixes
# with the normal one.
BUILD   ?= build
BIN     ?= bin

COMMON_SRCS     := $(wildcard common/*.c)
WORKER_SRCS     := $(filter-out worker/dispatcher%.c worker/main.c,$(wildcard worker/*.c))
DISPATCHER_SRCS := $(wildcard worker/dispatcher*.c)
FAKE_SRCS       := $(wildcard tests/fake-comet/*.c)
TOOLS           := $(basename $(notdir $(wildcard tools/*.c)))
UNIT_SRCS       := $(wildcard tests/unit/test_*.c)
INTEG_SRCS      := $(wildcard tests/integration/test_*.c)

COMMON_OBJS     := $(COMMON_SRCS:%.c=$(BUILD)/%.o)
WORKER_OBJS     := $(WORKER_SRCS:%.c=$(BUILD)/%.o)
LIBCOMMON       := $(BUILD)/libcommon.a
LIBWORKER       := $(BUILD)/libworker.a

BINS := $(BIN)/comet-worker $(BIN)/fake-comet $(TOOLS:%=$(BIN)/%)
ifneq ($(DISPATCHER_SRCS),)
BINS += $(BIN)/comet-dispatcher
endif
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_BINS := $(INTEG_SRCS:tests/integration/%.c=$(BUILD)/tests/%)

.PHONY: all deps test test-unit demo bench chaos clean san tests-bin
all: $(BINS)

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c $(wildcard common/*.h worker/*.h tests/fake-comet/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBWORKER): $(WORKER_OBJS) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $(WORKER_OBJS)

$(BIN)/comet-worker: $(BUILD)/worker/main.o $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIBWORKER) $(LIBCOMMON) $(PKG_LIBS)

$(BIN)/comet-dispatcher: $(DISPATCHER_SRCS:%.c=$(BUILD)/%.o) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

$(BIN)/fake-comet: $(FAKE_SRCS:%.c=$(BUILD)/%.o) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

$(BIN)/%: $(BUILD)/tools/%.o $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIBWORKER) $(LIBCOMMON) $(PKG_LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIBWORKER) $(LIBCOMMON) $(PKG_LIBS) -lcmocka

$(BUILD)/tests/%: $(BUILD)/tests/integration/%.o $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIBWORKER) $(LIBCOMMON) $(PKG_LIBS) -lcmocka

tests-bin: $(BINS) $(UNIT_BINS) $(INTEG_BINS)

# The sanitizer tree: same sources, separate objects and binaries.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
san:
	$(MAKE) tests-bin BUILD=build-san BIN=build-san/bin OPT="-O1 -g" \
	  EXTRA_CFLAGS="$(SAN_FLAGS)" EXTRA_LDFLAGS="$(SAN_FLAGS)"

test: deps
	@scripts/test.sh

test-unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(BUILD)

demo: deps all
	@scripts/demo.sh

bench: deps all
	@scripts/bench.sh

chaos: deps
	@CHAOS=1 scripts/test.sh

clean:
	rm -rf build build-san bin
