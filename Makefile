# imgedit — build, test, lint and demo.
#
#   make            build the C module for $(LUA) (default lua5.4)
#   make test       install missing Debian packages, build, run every spec
#                   under each interpreter of $(LUAS)
#   make demo       install, build, start the emulator, run one edit per provider
#   make lint       luacheck + the C code built with -Wall -Wextra -Werror
#   make doc        the API reference (LDoc) in build/doc
#   make clean

LUA        ?= lua5.4
LUA_PC     ?= $(LUA)
# The interpreters `make test` runs the whole suite under.
LUAS       ?= lua5.4 lua5.3 lua5.1 luajit
# Debian's package of an interpreter: for luajit, OpenResty's branch (luajit2),
# which Debian's nginx Lua module needs (it conflicts with package luajit);
# Neovim accepts either.
lua_pkg     = $(if $(filter luajit,$(1)),luajit2,$(1))
# Debian's development package of an interpreter's C API.
lua_dev     = $(if $(filter luajit,$(1)),libluajit2-5.1-dev,$(if $(filter lua5.1,$(1)),liblua5.1-0-dev,lib$(1)-dev))
BUILD      := build/$(LUA)
LUA_VERSION = $(patsubst lua%,%,$(LUA))
CORE_SO    := $(BUILD)/imgedit/core.so

CC         ?= cc
OPT        ?= -O2 -g
WARN       := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS_ALL  = $(OPT) $(WARN) -fPIC -std=c99 -D_POSIX_C_SOURCE=200809L \
              $(shell pkg-config --cflags $(LUA_PC) libcurl) $(CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_ALL = -shared $(shell pkg-config --libs libcurl) $(LDFLAGS) $(EXTRA_LDFLAGS)

SRC        := $(wildcard src/*.c)
HDR        := $(wildcard src/*.h)

# Debian packages the build and the specs need, installed only when missing.
DEB_PACKAGES := $(sort $(foreach l,$(LUA) $(LUAS),$(call lua_pkg,$(l)) $(call lua_dev,$(l)))) \
                libcurl4-openssl-dev pkg-config \
                lua-cjson lua-socket lua-busted lua-check lua-argparse tmux \
                openssl nginx libnginx-mod-http-lua neovim

SHELL      := /bin/bash

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all deps test test-one demo lint check-rock doc clean bench

all: $(CORE_SO)

$(CORE_SO): $(SRC) $(HDR) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $(SRC) $(LDFLAGS_ALL)

deps:
	@sh .ci/deps.sh $(DEB_PACKAGES)

# Every interpreter's core is built first (a spec may start a child process
# with another interpreter, such as Neovim's LuaJIT), then the suite runs
# under each. busted's own summary is not a line CI tools read: each run ends
# with a plain "N passed, N failed, N skipped" line, and the last line printed
# adds them up.
test: deps
	@for l in $(LUAS); do $(MAKE) --no-print-directory all LUA=$$l || exit 1; done
	@status=0; for l in $(LUAS); do $(MAKE) --no-print-directory test-one LUA=$$l || status=1; done; \
	  cat $(foreach l,$(LUAS),build/$(l)/summary) | awk '{ p += $$2; f += $$4; s += $$6 } \
	    END { printf "all interpreters: %d passed, %d failed, %d skipped\n", p, f, s }'; exit $$status

test-one:
	@mkdir -p $(BUILD)
	@rm -f $(BUILD)/summary
	set -o pipefail; $(LUA) /usr/bin/busted $(BUSTED_ARGS) | tee $(BUILD)/busted.log; status=$$?; \
	  sed 's/\x1b\[[0-9;]*m//g' $(BUILD)/busted.log | awk '/successes? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ \
	    { printf "$(LUA): %d passed, %d failed, %d skipped\n", $$1, $$4 + $$7, $$10 }' | tee $(BUILD)/summary; \
	  [ -s $(BUILD)/summary ] || echo "$(LUA): 0 passed, 1 failed, 0 skipped" > $(BUILD)/summary; exit $$status

demo: deps
	@$(MAKE) --no-print-directory all
	$(LUA) examples/demo.lua

lint: deps
	luacheck $(wildcard lua spec examples bench bin/*)
	$(MAKE) --no-print-directory -B all BUILD=build/lint-$(LUA) EXTRA_CFLAGS=-Werror

# The rockspec builds and installs into a scratch tree, and the installed
# module loads from outside the checkout (dependencies from Debian).
ROCK_SMOKE = local i = require("imgedit"); assert(i.client("foxapi")); \
  print("installed imgedit " .. i._VERSION .. ", core from " .. package.searchpath("imgedit.core", package.cpath))
check-rock: deps
	@sh .ci/deps.sh luarocks
	rm -rf build/rock-tree
	luarocks --lua-version $(LUA_VERSION) make --deps-mode=none --tree build/rock-tree imgedit-scm-1.rockspec
	cd /tmp && unset LUA_PATH LUA_CPATH \
	  && eval "$$(luarocks --lua-version $(LUA_VERSION) path --tree $(CURDIR)/build/rock-tree)" \
	  && $(LUA) -e '$(ROCK_SMOKE)'

# Benchmarks (not part of `make test`): imgedit against plain C libcurl
# programs and the curl tool, on loopback servers; see bench/RESULTS.md.
BENCH_BUILD := build/bench
BENCH_CFLAGS = -O2 -Wall -Wextra -std=c99
bench: deps all
	@sh .ci/deps.sh curl
	@mkdir -p $(BENCH_BUILD)
	$(CC) $(BENCH_CFLAGS) -o $(BENCH_BUILD)/baseline bench/baseline.c $(shell pkg-config --cflags --libs libcurl)
	$(CC) $(BENCH_CFLAGS) -o $(BENCH_BUILD)/fastserver bench/fastserver.c
	$(LUA) bench/run.lua

# The API reference (LDoc, from the doc comments) in build/doc; any warning
# LDoc prints fails the target.
doc:
	@sh .ci/deps.sh lua-ldoc lua-markdown
	@ldoc . 2>&1 | tee build/ldoc.log | grep -v -e '^reading configuration' -e '^output written' \
	  && { echo "ldoc printed warnings"; exit 1; } || echo "API reference in build/doc/index.html"

clean:
	rm -rf build luacov.*.out
