# imgedit — build, test, lint and demo.
#
#   make            build the C module for $(LUA) (default lua5.4)
#   make test       install missing Debian packages, build, run every spec
#                   under each interpreter of $(LUAS)
#   make demo       install, build, start the emulator, run one edit per provider
#   make lint       luacheck + the C code built with -Wall -Wextra -Werror
#   make check-poll the readiness set's poll() fallback, through its specs
#   make catalog    the README's model tables and meta.lua's types, from the catalogs
#   make doc        the API reference (LDoc) in build/doc
#   make check-rock luarocks lint, then install the rock into scratch trees
#   make rockspec   the release rockspec, made from the scm one
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

# The version is written once, in src/imgedit.h; the Lua layer reads it from
# the core, the release rockspec is made from it (spec/70-packaging checks).
VERSION    := $(shell sed -n 's/^\#define IMGEDIT_VERSION "\(.*\)"$$/\1/p' src/imgedit.h)
RELEASE_ROCKSPEC := imgedit-$(VERSION)-1.rockspec

# Debian packages the build and the specs need, installed only when missing.
DEB_PACKAGES := $(sort $(foreach l,$(LUA) $(LUAS),$(call lua_pkg,$(l)) $(call lua_dev,$(l)))) \
                libcurl4-openssl-dev pkg-config \
                lua-cjson lua-socket lua-busted lua-check lua-argparse tmux \
                openssl nginx libnginx-mod-http-lua neovim chromium

SHELL      := /bin/bash

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all deps test test-one check-poll demo lint check-rock doc clean bench catalog rockspec print-rockspec

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
	@set -o pipefail; $(LUA) /usr/bin/busted $(BUSTED_ARGS) | tee $(BUILD)/busted.log; status=$$?; \
	  sed 's/\x1b\[[0-9;]*m//g' $(BUILD)/busted.log | awk '/successes? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ \
	    { printf "$(LUA): %d passed, %d failed, %d skipped\n", $$1, $$4 + $$7, $$10 }' | tee $(BUILD)/summary; \
	  [ -s $(BUILD)/summary ] || echo "$(LUA): 0 passed, 1 failed, 0 skipped" > $(BUILD)/summary; exit $$status

# The readiness set's poll() fallback (src/ready.c, for systems without
# epoll), built with -DIMGEDIT_POLL: the core's spec of the set, and the
# OpenResty specs, whose driver ticks it, under nginx's LuaJIT.
POLL_BUILD := build/poll
check-poll: deps
	@$(MAKE) --no-print-directory all BUILD=$(POLL_BUILD)-$(LUA) EXTRA_CFLAGS=-DIMGEDIT_POLL
	@$(MAKE) --no-print-directory all LUA=luajit LUA_PC=luajit BUILD=$(POLL_BUILD)-luajit EXTRA_CFLAGS=-DIMGEDIT_POLL
	@set -o pipefail; IMGEDIT_READY_BACKEND=poll IMGEDIT_LUAJIT_BUILD=$(POLL_BUILD)-luajit \
	  LUA_CPATH='$(CURDIR)/$(POLL_BUILD)-$(LUA)/?.so;;' \
	  $(LUA) /usr/bin/busted spec/03-readiness_spec.lua spec/41-openresty_spec.lua | tee $(POLL_BUILD)-$(LUA)/busted.log; \
	  status=$$?; $(call busted_summary,check-poll,$(POLL_BUILD)-$(LUA)/busted.log); exit $$status

demo: deps
	@$(MAKE) --no-print-directory all
	$(LUA) examples/demo.lua

lint: deps
	luacheck $(wildcard lua spec examples bench tools bin/* .ci/*.lua)
	@# the rockspec lists its files one by one: none may be forgotten (but
	@# meta.lua: type definitions for language servers, not a module to load)
	@for f in $(SRC) $$(find lua -name '*.lua' ! -path lua/imgedit/meta.lua); do \
	  grep -q "\"$$f\"" imgedit-scm-1.rockspec || { echo "imgedit-scm-1.rockspec does not list $$f"; exit 1; }; \
	done
	$(MAKE) --no-print-directory -B all BUILD=build/lint-$(LUA) EXTRA_CFLAGS=-Werror

# The release rockspec: the scm one with the version of src/imgedit.h and
# its tag. Committed beside the scm one; spec/70-packaging checks that it is
# what this prints.
print-rockspec:
	@echo "-- Made by 'make rockspec' from imgedit-scm-1.rockspec: edit that one, then run it again."
	@sed -e 's/^version = "scm-1"$$/version = "$(VERSION)-1"/' \
	  -e 's|^  url = "git+file://\.",$$|&\n  tag = "v$(VERSION)",|' imgedit-scm-1.rockspec
rockspec:
	@$(MAKE) --no-print-directory -s print-rockspec > $(RELEASE_ROCKSPEC)
	@echo "$(RELEASE_ROCKSPEC)"

# Both rockspecs pass `luarocks lint`; the scm one builds and installs into a
# scratch tree for each interpreter of ROCK_LUAS, with LuaRocks' dependency
# check on: Debian's lua-cjson, lua-socket and lua-argparse do not register
# with LuaRocks, so .ci/rocks-provided.sh declares them (rocks_provided, at
# the versions dpkg reports) in a configuration with no rocks server, where a
# dependency nothing provides fails the install. (luarocks make builds in the
# checkout: its objects and ./imgedit/core.so, which Lua's default cpath
# would find, are removed.) Then, run from outside the
# checkout, the installed commands start and the installed module edits
# through both providers on the installed emulator command.
ROCK_LUAS ?= lua5.4 lua5.1
ROCK_DEBS := lua-cjson=lua-cjson lua-socket=luasocket lua-argparse=argparse
check-rock: deps
	@sh .ci/deps.sh luarocks
	@for r in imgedit-scm-1.rockspec $(RELEASE_ROCKSPEC); do luarocks lint $$r || { echo "luarocks lint $$r failed"; exit 1; }; done
	@mkdir -p build && sh .ci/rocks-provided.sh $(ROCK_DEBS) > build/rocks-provided.lua
	@for l in $(ROCK_LUAS); do \
	  v=$${l#lua}; tree=$(CURDIR)/build/rock-tree-$$l; rm -rf $$tree; \
	  LUAROCKS_CONFIG=$(CURDIR)/build/rocks-provided.lua luarocks --lua-version $$v make --tree $$tree \
	    imgedit-scm-1.rockspec >build/rock-$$l.log 2>&1 || { cat build/rock-$$l.log; exit 1; }; \
	  rm -rf imgedit src/*.o; \
	  ( cd /tmp && unset LUA_PATH LUA_CPATH && eval "$$(luarocks --lua-version $$v path --tree $$tree --bin)" \
	    && [ "$$(command -v imgedit)" = "$$tree/bin/imgedit" ] \
	    && imgedit --version && imgedit --help >/dev/null && imgedit-mock --help >/dev/null \
	    && FOXAPI_API_KEY=sk-test POWERTOKENS_API_KEY=sk-test imgedit doctor >/dev/null \
	    && ROCK_TREE=$$tree IMGEDIT_MOCK_LUA=$$l $$l $(CURDIR)/.ci/rock-smoke.lua ) || exit 1; \
	done

# Benchmarks (not part of `make test`): imgedit against plain C libcurl
# programs and the curl tool, on loopback servers, and inside one nginx
# worker against a plain cosocket client; see bench/RESULTS.md.
BENCH_BUILD := build/bench
BENCH_CFLAGS = -O2 -Wall -Wextra -std=c99
bench: deps all
	@sh .ci/deps.sh curl valgrind lua5.1 lua-curl
	@# the OpenResty workload's nginx loads build/luajit's core: rebuilt when
	@# the C sources changed (spec/support/openresty.lua only makes a missing one)
	@$(MAKE) --no-print-directory all LUA=luajit LUA_PC=luajit
	@mkdir -p $(BENCH_BUILD)
	$(CC) $(BENCH_CFLAGS) -o $(BENCH_BUILD)/baseline bench/baseline.c $(shell pkg-config --cflags --libs libcurl)
	$(CC) $(BENCH_CFLAGS) -o $(BENCH_BUILD)/fastserver bench/fastserver.c
	$(LUA) bench/run.lua

# The README's model tables and meta.lua's model types, rebuilt from the
# provider catalogs (spec/14 fails while they are stale).
catalog: all
	$(LUA) tools/catalog.lua

# The API reference (LDoc, from the doc comments) in build/doc; any warning
# LDoc prints fails the target. LDoc runs under LDOC_LUA, not under the
# interpreter lua-any picks from its script (5.2 where lua5.2 is installed):
# Debian's lua-markdown exists for Lua 5.1 only, and without it LDoc falls
# back to plain text.
LDOC_LUA := lua5.1
doc:
	@sh .ci/deps.sh $(LDOC_LUA) lua-ldoc lua-markdown
	@mkdir -p build
	@$(LDOC_LUA) "$$(command -v ldoc)" . 2>&1 | tee build/ldoc.log | grep -v -e '^reading configuration' -e '^output written' \
	  && { echo "ldoc printed warnings"; exit 1; } || echo "API reference in build/doc/index.html"

clean:
	rm -rf build luacov.*.out

# --- memory safety -------------------------------------------------------------
#
#   make check-asan       every spec against the core built with AddressSanitizer,
#                         UndefinedBehaviorSanitizer and LeakSanitizer
#   make check-valgrind   every spec under valgrind memcheck, the normal build
#   make fuzz             the libFuzzer harnesses in fuzz/, FUZZ_SECONDS each
#                         (FUZZ_TARGETS to pick some); not in `make test` nor CI
#
# The sanitizer builds use clang: its UBSan also flags arithmetic on NULL
# pointers, which GCC's does not. Debian's lua5.4 is not instrumented, so the
# ASan runtime is preloaded into it; the processes the specs start inherit
# that (a child lua5.4 that loads the core needs it), except the emulator,
# which never loads the core and runs without it. Each sanitizer report goes
# to a file in $(SAN_LOGS) (named after the program) and fails the target.

SAN_CC       := clang
SAN_PACKAGES := clang libclang-rt-dev
SAN_FLAGS    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_BUILD   := build/asan-$(LUA)
SAN_LOGS     := $(CURDIR)/$(ASAN_BUILD)/reports
# Looked up by the shell when the line runs: make expands a whole recipe
# before its first line has installed clang.
SAN_RUNTIME   = $$($(SAN_CC) -print-file-name=libclang_rt.asan-$$(uname -m).so)
SAN_ENV       = LD_PRELOAD=$(SAN_RUNTIME) \
  ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$(SAN_LOGS)/report:log_exe_name=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_LOGS)/report:log_exe_name=1 \
  LUA_CPATH='$(CURDIR)/$(ASAN_BUILD)/?.so;;' IMGEDIT_MOCK_LUA='env -u LD_PRELOAD $(LUA)'

SAN_BUILD_LOADED = local p = package.searchpath("imgedit.core", package.cpath); \
  assert(p and p:find("/$(ASAN_BUILD)/", 1, true), "not the sanitizer build: " .. tostring(p))

# $(call busted_summary,LABEL,LOG): the "N passed, N failed, N skipped" line of a run.
busted_summary = sed 's/\x1b\[[0-9;]*m//g' $(2) | awk '/successes? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ \
  { printf "$(1): %d passed, %d failed, %d skipped\n", $$1, $$4 + $$7, $$10 }'

check-asan: deps
	@sh .ci/deps.sh $(SAN_PACKAGES)
	@$(MAKE) --no-print-directory all BUILD=$(ASAN_BUILD) CC=$(SAN_CC) OPT="-O1 -g" \
	  EXTRA_CFLAGS="$(SAN_FLAGS) -shared-libasan"
	@rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS)
	@test -f "$(SAN_RUNTIME)" || { echo "check-asan: no ASan runtime for $(SAN_CC)"; exit 1; }
	@env $(SAN_ENV) $(LUA) -e '$(SAN_BUILD_LOADED)'
	set -o pipefail; env $(SAN_ENV) $(LUA) /usr/bin/busted $(BUSTED_ARGS) | tee $(ASAN_BUILD)/busted.log; \
	  status=$$?; \
	  if [ -n "$$(ls -A $(SAN_LOGS))" ]; then \
	    cat $(SAN_LOGS)/*; echo "check-asan: sanitizer reports above (in $(SAN_LOGS))"; status=1; \
	  else echo "check-asan: no ASan, UBSan or LeakSanitizer report"; fi; \
	  $(call busted_summary,check-asan,$(ASAN_BUILD)/busted.log); exit $$status

# Only the busted process runs under memcheck (no --trace-children): the
# emulator and any other child run natively. Leaks other than "definitely
# lost" are reported in the log but fail nothing.
VALGRIND_LOG := $(CURDIR)/$(BUILD)/valgrind.log
VALGRIND     := valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
                --show-leak-kinds=definite --keep-debuginfo=yes --trace-children=no --num-callers=40 --log-file=$(VALGRIND_LOG)
check-valgrind: deps
	@sh .ci/deps.sh valgrind
	@$(MAKE) --no-print-directory all
	@mkdir -p $(BUILD)
	set -o pipefail; $(VALGRIND) $(LUA) /usr/bin/busted $(BUSTED_ARGS) | tee $(BUILD)/busted-valgrind.log; \
	  status=$$?; \
	  if grep -q "ERROR SUMMARY: 0 errors" $(VALGRIND_LOG); then \
	    grep -h -e "definitely lost:" -e "no leaks are possible" -e "ERROR SUMMARY" $(VALGRIND_LOG); \
	  else cat $(VALGRIND_LOG); echo "check-valgrind: memcheck errors above"; status=1; fi; \
	  $(call busted_summary,check-valgrind,$(BUILD)/busted-valgrind.log); exit $$status

FUZZ_BUILD   := build/fuzz
FUZZ_TARGETS ?= base64 response extract headers
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -std=c99 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror
FUZZ_BINS     = $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
# fuzz/response.c fails realloc calls on demand.
FUZZ_LDFLAGS_response := -Wl,--wrap=realloc

# The core's sources are compiled into each harness, instrumented for coverage.
$(FUZZ_BUILD)/%: fuzz/%.c fuzz/fuzz_lua.h $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(FUZZ_FLAGS) -Isrc $(shell pkg-config --cflags lua5.4 libcurl) -o $@ $< $(SRC) \
	  $(shell pkg-config --libs lua5.4 libcurl) -lm $(FUZZ_LDFLAGS_$*)

# Each harness runs on its own corpus in build/fuzz/corpus (grown from the
# seeds in fuzz/corpus); a finding stops it, is saved in build/fuzz/artifacts
# and fails the target after the others ran.
fuzz: deps
	@sh .ci/deps.sh $(SAN_PACKAGES) liblua5.4-dev
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@mkdir -p $(FUZZ_BUILD)/artifacts; failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $(FUZZ_BUILD)/$$t.log)"; \
	  $(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	    -dict=fuzz/$$t.dict -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- $(FUZZ_ARGS) \
	    $(FUZZ_BUILD)/corpus/$$t fuzz/corpus/$$t >$(FUZZ_BUILD)/$$t.log 2>&1 \
	    || { failed="$$failed $$t"; tail -n 40 $(FUZZ_BUILD)/$$t.log; }; \
	  grep -E -e '^#[0-9]+[[:space:]]+DONE' -e '^stat::number_of_executed_units' $(FUZZ_BUILD)/$$t.log; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: findings in$$failed (inputs in $(FUZZ_BUILD)/artifacts)"; exit 1; fi; \
	echo "fuzz: no finding"

.PHONY: check-asan check-valgrind fuzz
