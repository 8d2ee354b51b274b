-- bin/imgedit run from a checkout, as the README says, with no module paths
-- set: it finds its own modules and the C core built for the interpreter
-- running it, or says which build to make. Each case is a scratch checkout
-- (bin/imgedit copied; lua/ and build/<interpreter> linked to this one's),
-- run from another directory.
local helpers = require("spec.helpers")

local quote = helpers.shell_quote

--- The directory of `?.so` that holds the imgedit.core this process loaded.
local function loaded_build()
  for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", "imgedit/core")
    if helpers.exists(path) then return (path:gsub("/imgedit/core%.so$", "")) end
  end
  error("imgedit.core is not on package.cpath")
end

--- Another interpreter, whose C API differs from this one's.
local OTHER = helpers.LUA == "lua5.4" and "lua5.3" or "lua5.4"

--- A scratch checkout with the builds `builds` ({name = directory}).
local function checkout(builds)
  local root = helpers.tmpdir()
  helpers.run(("mkdir %s/bin %s/build && cp %s/bin/imgedit %s/bin/ && ln -s %s/lua %s/lua"):format(quote(root),
    quote(root), quote(helpers.ROOT), quote(root), quote(helpers.ROOT), quote(root)))
  for name, build in pairs(builds) do
    helpers.run(("ln -s %s %s/build/%s"):format(quote(build), quote(root), name))
  end
  return root
end

--- Runs `lua root/bin/imgedit --version` from /, without LUA_PATH and with
-- `cpath` as LUA_CPATH (or none); returns {status, out, err}. Another
-- interpreter than this one runs without what `make check-asan` preloads.
local function version(lua, root, cpath)
  local env = cpath and ("-u LUA_PATH LUA_CPATH=" .. quote(cpath)) or "-u LUA_PATH -u LUA_CPATH"
  if lua ~= helpers.LUA then env = "-u LD_PRELOAD " .. env end
  local out, err = os.tmpname(), os.tmpname()
  local p = assert(io.popen(("cd / && env %s timeout 30 %s %s --version </dev/null >%s 2>%s; echo $?"):format(env,
    lua, quote(root .. "/bin/imgedit"), quote(out), quote(err))))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local r = { status = status, out = helpers.read(out) or "", err = helpers.read(err) or "" }
  os.remove(out)
  os.remove(err)
  return r
end

describe("bin/imgedit in a checkout", function()
  local roots = {}

  setup(function()
    assert(helpers.run("command -v " .. OTHER .. " || echo missing"):match("/"),
      OTHER .. " is needed to run bin/imgedit with another interpreter (apt-get install " .. OTHER .. ")")
  end)
  teardown(function()
    for _, root in ipairs(roots) do helpers.rmdir(root) end
  end)

  it("finds its modules and the C core built for the interpreter running it, with no module paths set", function()
    local root = checkout({ [helpers.LUA] = loaded_build() })
    roots[#roots + 1] = root
    local r = version(helpers.LUA, root)
    assert.equal(0, r.status, r.err)
    assert.matches("^imgedit %d+%.%d+%.%d+ %(libcurl/", r.out)
  end)

  it("says which build to make when none was made for the interpreter running it", function()
    local root = checkout({ [OTHER] = loaded_build() })
    roots[#roots + 1] = root
    local r = version(helpers.LUA, root)
    assert.equal(1, r.status, r.out)
    assert.matches(("imgedit: this checkout has no C core built for %s %%(Lua [%%d.]+%%): run `make LUA=%s` in %s,")
      :format(helpers.LUA, helpers.LUA, root:gsub("%p", "%%%0")), r.err)
    assert.matches(", or run the command with an interpreter it was built for: " .. OTHER .. " ", r.err, 1, true)
    assert.is_nil(r.err:find("internal error", 1, true))
  end)

  it("uses the checkout's build when LUA_CPATH points at a build for another Lua", function()
    -- the other interpreter's core, built as `make test` builds them all
    helpers.run(("cd %s && env -u LD_PRELOAD -u MAKEFLAGS -u MAKELEVEL make --no-print-directory -s all LUA=%s"
      .. " >/dev/null"):format(quote(helpers.ROOT), OTHER))
    local root = checkout({ [OTHER] = helpers.ROOT .. "/build/" .. OTHER })
    roots[#roots + 1] = root
    -- this interpreter's build, which OTHER cannot load (undefined symbols)
    local r = version(OTHER, root, loaded_build() .. "/?.so;;")
    assert.equal(0, r.status, r.err)
    assert.matches("^imgedit %d+%.%d+%.%d+ %(libcurl/", r.out)
  end)
end)
