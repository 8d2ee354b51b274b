-- The hostile server of spec/support/hostile.lua: answers exactly the bytes
-- its rules say. Checked over raw loopback sockets (luasocket), not through
-- the code under test.
local socket = require("socket")
local hostile = require("spec.support.hostile")

--- Sends one request and reads the whole answer (the server closes the
-- connection after it); bounded by the socket's timeout.
local function exchange(url, request)
  local host, port = url:match("^http://([^:/]+):(%d+)")
  local c = assert(socket.connect(host, tonumber(port)))
  c:settimeout(5)
  assert(c:send(request))
  local data, err, partial = c:receive("*a")
  c:close()
  assert(err == nil or err == "closed", err)
  return data or partial
end

describe("the hostile server", function()
  local server

  setup(function() server = hostile.start() end)
  teardown(function() server:stop() end)
  before_each(function() server:reset() end)

  it("sends a raw answer verbatim, garbage included", function()
    server:rules({ { path = "/raw", raw = "HTTP/0.9 not a status line\r\nX: y\r\n\r\nbody" } })
    assert.equal("HTTP/0.9 not a status line\r\nX: y\r\n\r\nbody",
      exchange(server.url, "GET /raw HTTP/1.1\r\nHost: x\r\n\r\n"))
  end)

  it("builds an answer from a status line, headers in order, a padding header and a body", function()
    server:rules({ { path = "/page", status_line = "HTTP/1.1 200 Fine", headers = { { "Content-Type", "text/html" },
      { "X-Twice", "1" }, { "X-Twice", "2" } }, header_bytes = 100000, body = "<html></html>" } })
    local text = exchange(server.url, "GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
    local head = "HTTP/1.1 200 Fine\r\nContent-Type: text/html\r\nX-Twice: 1\r\nX-Twice: 2\r\n"
    assert.equal(head, text:sub(1, #head))
    assert.matches("\r\nX%-Padding: " .. ("p"):rep(100000) .. "\r\n", text)
    assert.matches("\r\nContent%-Length: 13\r\n", text)
    assert.equal("\r\n\r\n<html></html>", text:sub(-17))
  end)

  it("claims the Content-Length it is told, or none, and decodes a base64 body", function()
    server:rules({ { path = "/lie", length = 1000, body = "short" },
                   { path = "/none", length = false, body_base64 = "AAEC/w==" } })
    local lie = exchange(server.url, "GET /lie HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.matches("\r\nContent%-Length: 1000\r\n", lie)
    assert.equal("short", lie:sub(-5))
    local none = exchange(server.url, "GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.is_nil(none:find("Content-Length", 1, true))
    assert.equal("\0\1\2\255", none:sub(-4))
  end)

  it("answers a rule only `times` times, then 404, and logs every request with its body", function()
    server:rules({ { method = "POST", path_match = "^/once", times = 1, body = "first" } })
    local request = "POST /once?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    assert.equal("first", exchange(server.url, request):sub(-5))
    assert.matches("^HTTP/1%.1 404", exchange(server.url, request))
    local log = server:requests()
    assert.equal(2, #log)
    assert.same({ "POST", "/once?x=1", "/once", "abc" }, { log[1].method, log[1].target, log[1].path, log[1].body })
    assert.matches("^POST /once%?x=1 HTTP/1%.1\r\n", log[2].head)
  end)
end)
