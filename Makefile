# imgedit — build, test, lint and demo.
#
#   make            build the C module for $(LUA) (default lua5.4)
#   make test       install missing Debian packages, build, run every spec
#   make demo       install, build, start the emulator, run one edit per provider
#   make lint       luacheck + the C code built with -Wall -Wextra -Werror
#   make clean

LUA        ?= lua5.4
LUA_PC     ?= $(LUA)
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
DEB_PACKAGES := $(LUA) lib$(LUA)-dev libcurl4-openssl-dev pkg-config \
                lua-cjson lua-socket lua-busted lua-check

SHELL      := /bin/bash

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all deps test demo lint check-rock clean

all: $(CORE_SO)

$(CORE_SO): $(SRC) $(HDR) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $(SRC) $(LDFLAGS_ALL)

deps:
	@sh .ci/deps.sh $(DEB_PACKAGES)

# busted's own summary is not a line CI tools read; the last line printed
# is the plain "N passed, N failed, N skipped" count of the same run.
test: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p $(BUILD)
	set -o pipefail; $(LUA) /usr/bin/busted $(BUSTED_ARGS) | tee $(BUILD)/busted.log
	@sed 's/\x1b\[[0-9;]*m//g' $(BUILD)/busted.log | awk '/successes? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ \
	  { printf "$(LUA): %d passed, %d failed, %d skipped\n", $$1, $$4 + $$7, $$10 }'

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

clean:
	rm -rf build luacov.*.out
