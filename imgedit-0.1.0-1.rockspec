-- Made by 'make rockspec' from imgedit-scm-1.rockspec: edit that one, then run it again.
-- imgedit from its checkout: `luarocks make` builds the C core and installs
-- the Lua modules and the `imgedit` and `imgedit-mock` commands.
--
-- Debian's Lua packages (lua-cjson, lua-socket, lua-argparse) do not register
-- with LuaRocks: declare them in the LuaRocks configuration (`make
-- check-rock` shows how: rocks_provided), or add `--deps-mode=none`.
--
-- The release rockspec (imgedit-<version>-1.rockspec) is made from this one
-- by `make rockspec`; the version itself is written once, in src/imgedit.h.
rockspec_format = "3.0"
package = "imgedit"
version = "0.1.0-1"

source = {
  url = "git+file://.",
  tag = "v0.1.0",
}

description = {
  summary = "Edit and generate images through AI image APIs, from Lua",
  detailed = [[
    A C core on libcurl and lua-cjson with a thin Lua layer: clients for the
    foxapi (PHOTA, asynchronous tasks) and powertokens (Qwen / Wan,
    synchronous) image APIs, structured errors, safe retries, streaming
    downloads, and a local emulator of both APIs for offline development.
  ]],
  license = "MIT",
}

-- Which part needs what: the library needs lua-cjson alone. The `imgedit`
-- command also needs argparse; the emulator (`imgedit-mock`, `imgedit mock`)
-- needs luasocket, and nothing else does. LuaRocks has no optional
-- dependencies, so a rock that installs both commands declares both.
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",  -- the library (Debian: lua-cjson)
  "argparse >= 0.6",   -- the imgedit command only (Debian: lua-argparse)
  "luasocket >= 3.0",  -- the emulator only: imgedit-mock, imgedit mock (Debian: lua-socket)
}

-- Only the library is looked up: Debian keeps curl/curl.h in a multiarch
-- include directory that the compiler searches but LuaRocks does not.
external_dependencies = {
  CURL = { library = "curl" },
}

build = {
  type = "builtin",
  modules = {
    ["imgedit.core"] = {
      sources = { "src/core.c", "src/fields.c", "src/multi.c", "src/session.c", "src/transfer.c", "src/response.c",
                  "src/extract.c", "src/buffer.c", "src/blob.c", "src/codec.c", "src/fs.c", "src/ready.c" },
      libraries = { "curl" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      defines = { "_POSIX_C_SOURCE=200809L" },
    },
    ["imgedit"] = "lua/imgedit/init.lua",
    ["imgedit.client"] = "lua/imgedit/client.lua",
    ["imgedit.doctor"] = "lua/imgedit/doctor.lua",
    ["imgedit.health"] = "lua/imgedit/health.lua",
    ["imgedit.errors"] = "lua/imgedit/errors.lua",
    ["imgedit.file"] = "lua/imgedit/file.lua",
    ["imgedit.json"] = "lua/imgedit/json.lua",
    ["imgedit.log"] = "lua/imgedit/log.lua",
    ["imgedit.params"] = "lua/imgedit/params.lua",
    ["imgedit.result"] = "lua/imgedit/result.lua",
    ["imgedit.heap"] = "lua/imgedit/heap.lua",
    ["imgedit.scheduler"] = "lua/imgedit/scheduler.lua",
    ["imgedit.runtime"] = "lua/imgedit/runtime/init.lua",
    ["imgedit.runtime.blocking"] = "lua/imgedit/runtime/blocking.lua",
    ["imgedit.runtime.ngx"] = "lua/imgedit/runtime/ngx.lua",
    ["imgedit.runtime.nvim"] = "lua/imgedit/runtime/nvim.lua",
    ["imgedit.task"] = "lua/imgedit/task.lua",
    ["imgedit.transport"] = "lua/imgedit/transport.lua",
    ["imgedit.providers"] = "lua/imgedit/providers/init.lua",
    ["imgedit.providers.foxapi"] = "lua/imgedit/providers/foxapi.lua",
    ["imgedit.providers.powertokens"] = "lua/imgedit/providers/powertokens.lua",
    ["imgedit.mock"] = "lua/imgedit/mock/init.lua",
    ["imgedit.mock.http"] = "lua/imgedit/mock/http.lua",
    ["imgedit.mock.foxapi"] = "lua/imgedit/mock/foxapi.lua",
    ["imgedit.mock.powertokens"] = "lua/imgedit/mock/powertokens.lua",
    ["imgedit.mock.png"] = "lua/imgedit/mock/png.lua",
    ["imgedit.mock.cdn"] = "lua/imgedit/mock/cdn.lua",
    ["imgedit.mock.process"] = "lua/imgedit/mock/process.lua",
    ["imgedit.cli"] = "lua/imgedit/cli/init.lua",
    ["imgedit.cli.batch"] = "lua/imgedit/cli/batch.lua",
    ["imgedit.cli.commands"] = "lua/imgedit/cli/commands.lua",
    ["imgedit.cli.doctor"] = "lua/imgedit/cli/doctor.lua",
    ["imgedit.cli.gallery"] = "lua/imgedit/cli/gallery.lua",
    ["imgedit.cli.job"] = "lua/imgedit/cli/job.lua",
    ["imgedit.cli.journal"] = "lua/imgedit/cli/journal.lua",
    ["imgedit.cli.models"] = "lua/imgedit/cli/models.lua",
    ["imgedit.cli.output"] = "lua/imgedit/cli/output.lua",
    ["imgedit.cli.progress"] = "lua/imgedit/cli/progress.lua",
  },
  install = {
    bin = { ["imgedit"] = "bin/imgedit", ["imgedit-mock"] = "bin/imgedit-mock" },
  },
}

test = {
  type = "command",
  command = "make test",
}
