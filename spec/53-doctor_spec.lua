-- `imgedit doctor`: the set-up report, run as a child process against the
-- emulator, and what it sent (the emulator's request log).
local cjson = require("cjson")
local core = require("imgedit.core")
local doctor = require("imgedit.doctor")
local helpers = require("spec.helpers")

local RUN_TIMEOUT = 60 -- seconds: no run of the command may take longer
local PING = "/foxapi/v1/tasks/imgedit-doctor-ping"

local quote = helpers.shell_quote

--- Runs `imgedit doctor args...` with the emulator's URLs and key in the
--- environment (`env`: more variables; false unsets one); returns
--- {status, out, err}.
local function run(m, args, env)
  local vars = {
    FOXAPI_API_KEY = helpers.KEY, POWERTOKENS_API_KEY = helpers.KEY,
    FOXAPI_BASE_URL = m.foxapi, POWERTOKENS_BASE_URL = m.powertokens,
    LUA_PATH = package.path, LUA_CPATH = package.cpath, IMGEDIT_LOG = false,
  }
  for k, v in pairs(env or {}) do vars[k] = v end
  local unset, set = {}, {}
  for k, v in pairs(vars) do
    if v == false then unset[#unset + 1] = "-u " .. k else set[#set + 1] = k .. "=" .. quote(v) end
  end
  -- env takes its -u options before the assignments
  local words = { "env", table.concat(unset, " "), table.concat(set, " ") }
  words[#words + 1] = helpers.LUA .. " bin/imgedit doctor"
  for _, a in ipairs(args or {}) do words[#words + 1] = quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local p = assert(io.popen(("cd %s && timeout -k 5 %d %s </dev/null >%s 2>%s; echo $?"):format(
    quote(helpers.ROOT), RUN_TIMEOUT, table.concat(words, " "), quote(out), quote(err))))
  local status = tonumber(p:read("*a"):match("%d+"))
  p:close()
  local r = { status = status, out = helpers.read(out) or "", err = helpers.read(err) or "" }
  os.remove(out)
  os.remove(err)
  return r
end

--- The item `id` of section `section` of a --json report.
local function find(report, section, id)
  for _, s in ipairs(report.sections) do
    if s.id == section then
      for _, it in ipairs(s.items) do
        if it.id == id then return it end
      end
    end
  end
  error(("no item %s in section %s"):format(id, section))
end

describe("imgedit doctor", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  it("reports the interpreter, the core, libcurl and each provider, and exits 0 when all is well", function()
    local r = run(m, {})
    assert.equal(0, r.status, r.out .. r.err)
    for _, text in ipairs({ "interpreter", "imgedit.core", core.version, "libcurl", "TLS", "HTTP/2", "CA bundle",
                            "foxapi: ", "powertokens: ", "set ($FOXAPI_API_KEY)", m.foxapi .. " ($FOXAPI_BASE_URL)",
                            "No problem found" }) do
      assert.matches(text, r.out, 1, true)
    end
    -- where the core was loaded from: the build this spec runs
    assert.matches(package.searchpath and package.searchpath("imgedit.core", package.cpath) or "imgedit/core.so",
      r.out, 1, true)
    assert.equal(0, #helpers.api_requests(m), "doctor without --ping sent a request")
  end)

  it("--ping makes one unbilled request per provider that has one: no POST reaches the emulator", function()
    local r = run(m, { "--ping", "--json" })
    assert.equal(0, r.status, r.out .. r.err)
    local report = cjson.decode(r.out)
    assert.is_true(report.ok)
    local fox = find(report, "foxapi", "key_check")
    assert.equal("ok", fox.status)
    assert.matches("accepted: GET /v1/tasks/imgedit-doctor-ping answered HTTP 404", fox.value, 1, true)
    local pt = find(report, "powertokens", "key_check")
    assert.equal("info", pt.status)
    assert.matches("cannot be checked without a billed request", pt.value, 1, true)
    local requests = helpers.api_requests(m)
    assert.equal(1, #requests)
    assert.same({ "GET", PING, "Bearer " .. helpers.KEY },
      { requests[1].method, requests[1].path, requests[1].headers.authorization })
    assert.equal(0, #m:requests({ method = "POST" }))
    assert.equal(0, #m:tasks())
  end)

  it("a wrong key is rejected (HTTP 401) and exits 1 with the fix, never showing the key", function()
    local wrong = "sk-wrong-key-1234"
    local r = run(m, { "--ping" }, { FOXAPI_API_KEY = wrong })
    assert.equal(1, r.status, r.out)
    assert.matches("rejected: GET /v1/tasks/imgedit-doctor-ping answered HTTP 401", r.out, 1, true)
    assert.matches("fix: the provider does not accept this key: set FOXAPI_API_KEY to a valid key", r.out, 1, true)
    assert.matches("1 problem found", r.out, 1, true)
    assert.is_nil((r.out .. r.err):find(wrong, 1, true), "the key was printed")
    assert.equal(1, #helpers.api_requests(m))
    assert.equal(0, #m:requests({ method = "POST" }))
  end)

  it("a missing key is an error for the provider asked for, or when no provider has one; a warning otherwise",
    function()
    local r = run(m, { "-p", "foxapi", "--ping" }, { FOXAPI_API_KEY = false })
    assert.equal(1, r.status, r.out)
    assert.matches("error  API key           not set", r.out, 1, true)
    assert.matches("fix: set FOXAPI_API_KEY to your foxapi key", r.out, 1, true)
    assert.matches("not checked: no key", r.out, 1, true)
    assert.is_nil(r.out:find("powertokens: ", 1, true), "-p foxapi reported powertokens")
    assert.equal(0, #helpers.api_requests(m), "a request was sent without a key")

    r = run(m, {}, { FOXAPI_API_KEY = false })
    assert.equal(0, r.status, r.out)
    assert.matches("warn   API key           not set", r.out, 1, true)
    r = run(m, { "--json" }, { FOXAPI_API_KEY = false, POWERTOKENS_API_KEY = "" })
    assert.equal(1, r.status)
    local report = cjson.decode(r.out)
    assert.same({ false, 2 }, { report.ok, report.problems })
    assert.equal("error", find(report, "powertokens", "key").status)
  end)

  it("a plain-http base URL on another machine is refused as imgedit would, and nothing is sent to it", function()
    local url = "http://images.example.com/foxapi"
    local r = run(m, { "--ping" }, { FOXAPI_BASE_URL = url })
    assert.equal(1, r.status, r.out)
    assert.matches(url .. " ($FOXAPI_BASE_URL): refused: base_url: plain http:// to images.example.com is refused",
      r.out, 1, true)
    assert.matches("use https://, or add --allow-http to accept the risk", r.out, 1, true)
    assert.matches("fix: set FOXAPI_BASE_URL to the provider's https:// origin", r.out, 1, true)
    assert.matches("not checked: the client is refused", r.out, 1, true)
    assert.equal(0, #helpers.api_requests(m))
    -- accepted with --allow-http, as the other commands accept it (no --ping: nothing leaves loopback)
    r = run(m, { "--allow-http", "-p", "foxapi" }, { FOXAPI_BASE_URL = url })
    assert.equal(0, r.status, r.out)
    assert.matches("ok     base URL          " .. url .. " ($FOXAPI_BASE_URL)", r.out, 1, true)
  end)

  it("reads core.curl_info() where the core has it: an unreadable CA bundle is an error, blocking DNS a warning",
    function()
    local saved = rawget(core, "curl_info")
    core.curl_info = function()
      return { version = "8.9.0", tls = { backend = "OpenSSL", version = "3.3.0" }, resolver = "blocking",
               features = { http2 = false, async_dns = false }, ca_file = "/nonexistent/ca.pem" }
    end
    local ok, report = pcall(doctor.run, {})
    core.curl_info = saved
    assert(ok, report)
    local function libcurl(id)
      for _, it in ipairs(report.sections[2].items) do
        if it.id == id then return it end
      end
    end
    assert.same({ "error", "/nonexistent/ca.pem (libcurl's default) cannot be read" },
      { libcurl("ca").status, libcurl("ca").value })
    assert.matches("ca-certificates", libcurl("ca").fix, 1, true)
    assert.same({ "warn", "no: a name lookup blocks the thread" }, { libcurl("async_dns").status,
      libcurl("async_dns").value })
    assert.same({ "warn", "no: HTTP/1.1 only" }, { libcurl("http2").status, libcurl("http2").value })
    assert.equal("OpenSSL 3.3.0", libcurl("tls").value)
    assert.is_false(report.ok)
  end)

  it("derives libcurl's facts from the core: TLS backend, HTTP/2 and the version line agree", function()
    local info = doctor.curl_info()
    assert.matches("^libcurl/" .. info.version:gsub("%.", "%%.") .. " ", core.curl_version)
    assert.is_table(info.tls, "this libcurl has no TLS")
    assert.matches(" " .. info.tls.backend .. "/", core.curl_version, 1, true)
    assert.equal(core.curl_version:find(" nghttp2/", 1, true) ~= nil, info.features.http2 == true)
  end)
end)
