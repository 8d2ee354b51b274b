-- Errors: one structure for every failure, one line when printed.
local errors = require("imgedit.errors")
local imgedit = require("imgedit")

describe("errors", function()
  it("print as one line: kind, message, details and what to do", function()
    local err = errors.new("rate_limited", "Too many\nrequests", {
      status = 429, type = "rate_limit_error", code = "rpm", request_id = "req-1", attempts = 3,
    })
    assert.equal("imgedit: rate_limited: Too many requests (HTTP 429, type rate_limit_error, code rpm,"
      .. " request req-1, 3 attempts); slow down: retry later or lower the concurrency", tostring(err))
  end)

  it("carry the documented fields", function()
    local err = errors.new("task_failed", "task t failed", { task_id = "t", code = "x" })
    assert.equal("task_failed", err.kind)
    assert.equal("t", err.task_id)
    assert.is_false(err.retryable)
    assert.is_true(imgedit.is_error(err))
    assert.is_false(imgedit.is_error({ kind = "io" }))
  end)

  it("have advice for every kind", function()
    for kind in pairs(errors.KINDS) do
      local line = tostring(errors.new(kind, "m"))
      assert.matches("^imgedit: " .. kind .. ": m; %a", line)
    end
  end)

  it("redact a secret wherever it appears", function()
    local err = errors.new("auth", "key abc.def rejected; abc.def again", { code = "abc.def" }, "abc.def")
    assert.equal("key [redacted] rejected; [redacted] again", err.message)
    assert.equal("[redacted]", err.code)
    assert.is_nil(tostring(err):find("abc.def", 1, true))
  end)

  it("map HTTP statuses to kinds", function()
    local expected = { [401] = "auth", [402] = "quota", [404] = "not_found", [429] = "rate_limited",
                       [422] = "api", [400] = "api", [500] = "server", [503] = "server", [502] = "server" }
    for status, kind in pairs(expected) do assert.equal(kind, errors.kind_for_status(status)) end
  end)
end)
