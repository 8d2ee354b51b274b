--- imgedit: edit and generate images through AI image APIs.
--
--     local imgedit = require("imgedit")
--     local fox = imgedit.client("foxapi")
--     local result, err = fox:edit{prompt = "...", images = {"https://..."}}
--
-- The public surface is described in the README and API reference; each
-- concern lives in its own module under `imgedit.*`.
-- @module imgedit

local client = require("imgedit.client")
local core = require("imgedit.core")
local errors = require("imgedit.errors")
local file = require("imgedit.file")
local log = require("imgedit.log")
local params = require("imgedit.params")
local scheduler = require("imgedit.scheduler")

local imgedit = {
  _VERSION = core.version,
}

--- Creates a client for a provider ("foxapi" or "powertokens").
-- @function client
imgedit.client = client.new

--- A local image file, sent as a data: URI where the provider accepts one.
-- @function file
imgedit.file = file.new

--- True when `value` is an imgedit error.
-- @function is_error
imgedit.is_error = errors.is

--- Sends one log line per HTTP attempt to `fn(line, record)`; `nil` stops it.
function imgedit.log(fn)
  if fn ~= nil and type(fn) ~= "function" then params.argerror(1, "log", "function or nil", fn) end
  log.set(fn)
end

--- Waits `seconds`.
function imgedit.sleep(seconds)
  if type(seconds) ~= "number" then params.argerror(1, "sleep", "number", seconds) end
  scheduler.sleep(seconds)
end

return imgedit
