-- TLS verification against a real TLS server (nginx in front of the
-- emulator, spec/support/tls.lua, with a CA made for the run), and the
-- refusal of plain http:// to hosts that are not loopback.
local imgedit = require("imgedit")
local helpers = require("spec.helpers")
local tls = require("spec.support.tls")

local SUBMIT = "/foxapi/v1/images/generations"
local FOX_EDIT = { prompt = "p", images = { "https://example.com/portrait.jpg" } }
local GATEWAY = "http://api.gateway.invalid"

local quote = helpers.shell_quote

--- Runs Lua code in a child interpreter (same version, same module paths)
-- with extra environment variables; returns what it printed.
local function lua_with_env(env, code)
  local lua = helpers.LUA -- the interpreter running the specs (LuaJIT's _VERSION says 5.1)
  local setup = ("package.path = %q; package.cpath = %q; "):format(package.path, package.cpath)
  local vars = {}
  for name, value in pairs(env) do vars[#vars + 1] = name .. "=" .. quote(value) end
  local p = assert(io.popen(("env %s %s -e %s 2>&1"):format(table.concat(vars, " "), lua, quote(setup .. code))))
  local out = p:read("*a")
  p:close()
  return out
end

describe("TLS verification", function()
  local m, front

  setup(function() m, front = tls.start_with_mock() end)
  teardown(function() tls.stop_with_mock(m, front) end)
  before_each(function() tls.reset_with_mock(m, front, { task_delay = 0.1 }) end)

  local function fox(opts)
    local o = { base_url = front.url .. "/foxapi" }
    for k, v in pairs(opts or {}) do o[k] = v end
    return helpers.fox(m, o)
  end

  it("refuses a certificate from an unknown CA: a network error, nothing sent", function()
    local result, err = fox():edit(FOX_EDIT)
    assert.is_nil(result)
    assert.equal("network", err.kind)
    assert.matches("certificate", err.message, 1, true)
    assert.matches("certificate", tostring(err), 1, true)
    assert.matches("set ca_file", tostring(err), 1, true) -- what to do about it
    assert.is_nil(err.status)
    -- another attempt would meet the same certificate
    assert.is_false(err.retryable)
    assert.equal(1, err.attempts)
    assert.equal(0, #m:requests(), "a request reached the emulator")
    assert.equal(0, #front:requests(), "a request got through the TLS front")
  end)

  it("trusts the server with ca_file", function()
    local result, err = fox({ ca_file = front.ca_file }):edit(FOX_EDIT)
    assert.is_nil(err)
    assert.equal(1, #result.images)
    assert.equal(1, #helpers.api_requests(m, SUBMIT))
    local seen = front:requests({ count = #helpers.api_requests(m) })
    assert.equal("POST", seen[1].method)
    assert.equal(SUBMIT, seen[1].uri)
    assert.equal("HTTP/2.0", seen[1].protocol)
    assert.matches("^TLSv1%.[23]$", seen[1].ssl_protocol)
  end)

  it("checks the name against the certificate's subjectAltName (localhost)", function()
    local result, err = fox({ base_url = "https://localhost:" .. front.port .. "/foxapi",
      ca_file = front.ca_file }):submit(FOX_EDIT)
    assert.is_nil(err)
    assert.is_string(result.id)
  end)

  it("a ca_file that did not sign the certificate is refused too", function()
    local other = helpers.tmpdir()
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout %s/ca.key -out %s/ca.crt -days 1 -subj '/CN=another CA' >/dev/null 2>&1")
      :format(quote(other), quote(other))))
    local _, err = fox({ ca_file = other .. "/ca.crt", max_retries = 0 }):submit(FOX_EDIT)
    helpers.rmdir(other)
    assert.equal("network", err.kind)
    assert.matches("certificate", err.message, 1, true)
    assert.equal(0, #m:requests())
  end)

  it("skips verification with insecure = true", function()
    local result, err = fox({ insecure = true }):edit(FOX_EDIT)
    assert.is_nil(err)
    assert.equal(1, #result.images)
    assert.equal(1, #helpers.api_requests(m, SUBMIT))
  end)

  describe("plain http:// to a host that is not loopback", function()
    -- The emulator doubles as an HTTP proxy here: a request the library
    -- did send would reach it (and be recorded) even for an unresolvable host.

    it("is refused by imgedit.client before any connection", function()
      local client, err = imgedit.client("foxapi", { base_url = GATEWAY, proxy = m.api, api_key = helpers.KEY })
      assert.is_nil(client)
      assert.equal("invalid_request", err.kind)
      assert.matches("allow_http", err.message, 1, true)
      assert.equal(0, #m:requests())

      -- the same client with allow_http does connect (through the proxy)
      client = assert(imgedit.client("foxapi", { base_url = GATEWAY, proxy = m.api, api_key = helpers.KEY,
        allow_http = true, max_retries = 0 }))
      local _, sent_err = client:submit(FOX_EDIT)
      assert.equal("not_found", sent_err.kind)
      assert.equal(1, #m:requests({ path = "api.gateway.invalid/v1/images/generations" }))
    end)

    it("is refused when it comes from FOXAPI_BASE_URL", function()
      local code = [[
        local imgedit = require("imgedit")
        local opts = {proxy = os.getenv("SPEC_PROXY"), api_key = "sk-test", max_retries = 0,
          allow_http = os.getenv("SPEC_ALLOW_HTTP") == "1"}
        local client, err = imgedit.client("foxapi", opts)
        if client then
          local _
          _, err = client:submit({prompt = "p", images = {"https://example.com/portrait.jpg"}})
        end
        print(err and err.kind or "ok")
        print(err and err.message or "")
      ]]
      local out = lua_with_env({ FOXAPI_BASE_URL = GATEWAY, SPEC_PROXY = m.api }, code)
      local kind, message = out:match("^(%S+)\n(.*)$")
      assert.equal("invalid_request", kind, out)
      assert.matches("allow_http", message, 1, true)
      assert.equal(0, #m:requests())

      -- the child did read FOXAPI_BASE_URL: allowed, its request is the gateway's
      out = lua_with_env({ FOXAPI_BASE_URL = GATEWAY, SPEC_PROXY = m.api, SPEC_ALLOW_HTTP = "1" }, code)
      assert.equal("not_found", out:match("^(%S+)\n"), out)
      assert.equal(1, #m:requests({ path = "api.gateway.invalid/v1/images/generations" }))
    end)
  end)
end)
