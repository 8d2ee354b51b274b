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
local providers = require("imgedit.providers")
local runtime = require("imgedit.runtime")
local scheduler = require("imgedit.scheduler")

local imgedit = {
  _VERSION = core.version,
  --- JSON null, for parameters that take it (e.g. `profile_ids = imgedit.null`).
  null = params.null,
}

--- Creates a client for a provider (`imgedit.providers()` lists them).
-- @function client
imgedit.client = client.new

--- The names of the providers imgedit speaks, e.g. `{"foxapi", "powertokens"}`.
function imgedit.providers()
  return providers.names()
end

--- The model catalog of `provider`, as plain data: one entry per model,
-- `{name, doc, operations, default_for, fields}`, each field `{name, wire,
-- type, required, default, min, max, max_length, choices, ...}` (see
-- `imgedit.params` for every property). Returns nil and an
-- `invalid_request` error for an unknown provider.
function imgedit.models(provider)
  if type(provider) ~= "string" then params.argerror(1, "models", "string", provider) end
  local d = providers.get(provider)
  if not d then
    return nil, errors.new("invalid_request", ("unknown provider %s: use %s"):format(params.show(provider),
      providers.listed()))
  end
  return providers.catalog(d)
end

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

--- Waits `seconds`; inside `run`, other coroutines go on meanwhile.
function imgedit.sleep(seconds)
  if type(seconds) ~= "number" then params.argerror(1, "sleep", "number", seconds) end
  scheduler.sleep(seconds)
end

--- Runs `fn(...)` in the scheduler until it and all it spawned finish, and
-- returns `fn`'s results. Inside it, every waiting imgedit call yields, so
-- many requests proceed at once in one thread.
function imgedit.run(fn, ...)
  if type(fn) ~= "function" then params.argerror(1, "run", "function", fn) end
  return scheduler.run(fn, ...)
end

--- Starts `fn(...)` as a coroutine; `handle:join()` waits for its results
-- (or `nil, err` if it raised `err`).
function imgedit.spawn(fn, ...)
  if type(fn) ~= "function" then params.argerror(1, "spawn", "function", fn) end
  return scheduler.spawn(fn, ...)
end

--- Starts `fn(...)` as a coroutine and returns its handle at once, without
-- waiting for anything. Where the host has an event loop of its own, that
-- loop runs it: in Neovim ("nvim"), the editor's loop serves every wait of
-- `fn` while the editor goes on, and `fn` may call `vim.api` freely.
-- Elsewhere ("blocking", "ngx") it is `spawn`: `fn` runs when something
-- waits on the loop, at the next `join` or `run`.
function imgedit.async(fn, ...)
  if type(fn) ~= "function" then params.argerror(1, "async", "function", fn) end
  local handle = scheduler.spawn(fn, ...)
  local rt = runtime.current()
  if rt.start then rt.start(handle.loop) end
  return handle
end

--- Runs the functions concurrently (at most `opts.concurrency` at a time)
-- and returns `{ok = true, value = ...}` or `{ok = false, err = ...}` for
-- each, in order. A function that returns `nil, err` counts as failed.
function imgedit.gather(fns, opts)
  if type(fns) ~= "table" then params.argerror(1, "gather", "table", fns) end
  for i = 1, #fns do
    if type(fns[i]) ~= "function" then params.argerror(1, "gather", "table of functions", fns[i]) end
  end
  if opts ~= nil and type(opts) ~= "table" then params.argerror(2, "gather", "table", opts) end
  local concurrency = opts and opts.concurrency
  if concurrency ~= nil and not (params.is_integer(concurrency) and concurrency >= 1) then
    error("bad argument #2 to 'gather' (concurrency must be a positive integer)", 2)
  end
  return scheduler.gather(fns, concurrency)
end

--- Picks how imgedit waits: "blocking" (plain scripts), "nvim" (Neovim's
-- event loop), "ngx" (OpenResty), or a runtime table of the host's own
-- (see imgedit.runtime). Detected automatically; returns the name in use,
-- or nil and an error for an unknown name or a table that is no runtime.
function imgedit.runtime(name)
  if name == nil then return runtime.current().name end
  if type(name) ~= "string" and type(name) ~= "table" then
    params.argerror(1, "runtime", "string or runtime table", name)
  end
  local chosen, problem = runtime.set(name)
  if not chosen then return nil, errors.new("invalid_request", problem) end
  return chosen
end

return imgedit
