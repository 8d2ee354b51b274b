-- Packaging: one version everywhere (src/imgedit.h, the core, the Lua layer,
-- the command, both rockspecs, the CHANGELOG), and rockspecs that declare
-- what the installed commands need. `make check-rock` installs the rock.
local core = require("imgedit.core")
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local quote = helpers.shell_quote
-- make runs without what `make test` puts in the environment
local MAKE = "env -u LD_PRELOAD -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -s"

--- A rockspec's fields (a rockspec is Lua assignments).
local function rockspec(name)
  local path = helpers.ROOT .. "/" .. name
  local text = assert(helpers.read(path), "no " .. name)
  local fields = {}
  local chunk
  if setfenv then
    chunk = assert(loadstring(text, "=" .. name))
    setfenv(chunk, fields)
  else
    chunk = assert(load(text, "=" .. name, "t", fields))
  end
  chunk()
  return fields, text
end

describe("packaging", function()
  local version = core.version

  it("has one version: the core's, the Lua layer's and the command's", function()
    assert.matches("^%d+%.%d+%.%d+$", version)
    assert.equal(version, imgedit._VERSION)
    local header = helpers.read(helpers.ROOT .. "/src/imgedit.h")
    assert.equal(version, header:match('#define IMGEDIT_VERSION "([^"]+)"'))
    local out = helpers.run(("cd %s && LUA_PATH=%s LUA_CPATH=%s %s bin/imgedit --version"):format(
      quote(helpers.ROOT), quote(package.path), quote(package.cpath), helpers.LUA))
    assert.matches("^imgedit " .. version:gsub("%.", "%%.") .. " ", out)
  end)

  it("has a release rockspec of that version beside the scm one, made from it by make rockspec", function()
    local scm = rockspec("imgedit-scm-1.rockspec")
    local release_name = ("imgedit-%s-1.rockspec"):format(version)
    local release, release_text = rockspec(release_name)
    assert.equal("scm-1", scm.version)
    assert.equal(version .. "-1", release.version)
    assert.equal("v" .. version, release.source.tag)
    assert.is_nil(scm.source.tag)
    -- the release differs from the scm rockspec by its version and tag alone
    local made = helpers.run(("cd %s && %s print-rockspec"):format(quote(helpers.ROOT), MAKE))
    assert.equal(made, release_text, release_name .. " is stale: run make rockspec")
    assert.same(scm.dependencies, release.dependencies)
    assert.same(scm.build, release.build)
  end)

  it("declares what the installed commands need, and installs no type definitions as a module", function()
    local scm = rockspec("imgedit-scm-1.rockspec")
    local names = {}
    for _, dep in ipairs(scm.dependencies) do names[dep:match("^(%S+)")] = true end
    assert.same({ lua = true, ["lua-cjson"] = true, argparse = true, luasocket = true }, names)
    assert.is_nil(scm.build.modules["imgedit.meta"])
    for name, source in pairs(scm.build.modules) do
      if type(source) == "string" then
        assert.is_true(helpers.exists(helpers.ROOT .. "/" .. source), name .. ": " .. source)
      end
    end
    for command, script in pairs(scm.build.install.bin) do
      assert.is_true(helpers.exists(helpers.ROOT .. "/" .. script), command)
    end
  end)

  it("has a CHANGELOG section for this release", function()
    local changelog = helpers.read(helpers.ROOT .. "/CHANGELOG.md")
    assert.matches("\n## " .. version:gsub("%.", "%%.") .. "[ \n]", changelog)
  end)
end)
