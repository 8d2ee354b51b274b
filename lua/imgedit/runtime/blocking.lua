--- The blocking runtime: plain Lua scripts. A wait sleeps in
-- `curl_multi_poll`, which returns as soon as a transfer's socket is ready
-- or curl's next timer is due.
-- @module imgedit.runtime.blocking

local IDLE = require("imgedit.runtime").IDLE

return {
  name = "blocking",
  perform = function(loop) loop:multi():perform() end,
  wait = function(loop, seconds) loop:multi():poll(seconds or IDLE) end,
}
